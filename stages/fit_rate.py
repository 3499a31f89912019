"""DVC stage: fit the JPEG size estimate R at one QF and validate it on held-out photos."""
from caisp.pipeline.rate_fit import run_fit_rate
from stages._entry import main

if __name__ == "__main__":
    main(run_fit_rate, args=("point",))
