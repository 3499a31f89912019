"""DVC stage: real-JPEG BPP/PSNR evaluation of the aware ISP against the agnostic control."""
from caisp.pipeline import run_evaluate
from stages._entry import main

if __name__ == "__main__":
    main(run_evaluate, matrix=("qf", "variant", "frozen"))
