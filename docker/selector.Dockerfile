# Base for a selector submitted as a container image (docs/containers.md, templates/selector/): the harness image
# plus the submission's package, installed so that its entry point in `selbench.selectors` is registered. The job
# contract is the harness's: `python -m selbench.harness.job STORE JOB`, run with no network, the pool read-only
# and only the job's staging folder writable.
ARG HARNESS_IMAGE=selbench-harness:latest
FROM ${HARNESS_IMAGE}
COPY . /submission/
RUN pip install -q --no-deps --no-build-isolation /submission \
 && python -c "from selbench.selectors.registry import available; print(sorted(available()))"
