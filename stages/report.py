"""DVC stage: reports/report.md with the paper's tables and figures re-made from this run."""
from caisp.pipeline.report import run_report
from stages._entry import main

if __name__ == "__main__":
    main(run_report)
