"""DVC stage: the rate-aware ISP and the agnostic control over JPEG's sweep with every encoder; BD-rates."""
from caisp.pipeline.rate_eval import run_evaluate_rate
from stages._entry import main

if __name__ == "__main__":
    main(run_evaluate_rate, args=("regime", "point", "lambda_rate"))
