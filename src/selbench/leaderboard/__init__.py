"""The leaderboard frame (ARP and OSC per cell) and its statistics: one layer below both the harness and the
reports, so data flows one way — store → results (harness) → leaderboard → tables (reports)."""

from selbench.leaderboard.frame import (
                                        LINEAGE_COLUMNS,
                                        REFERENCE,
                                        REFERENCE_BUDGET,
                                        SANITY,
                                        SELECTION_PARTS,
                                        UNTUNED,
                                        UNTUNED_BUDGET,
                                        CellStatus,
                                        LeaderboardRow,
                                        leaderboard,
                                        role,
)

__all__ = ["CellStatus", "LINEAGE_COLUMNS", "LeaderboardRow", "REFERENCE", "REFERENCE_BUDGET", "SANITY",
           "SELECTION_PARTS", "UNTUNED", "UNTUNED_BUDGET", "leaderboard", "role"]
