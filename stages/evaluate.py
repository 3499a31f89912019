"""DVC stage: real-JPEG BPP/PSNR evaluation of the aware ISP's seeds against every control
(--controls: evaluate the controls themselves, once)."""
from caisp.pipeline import run_evaluate, run_evaluate_controls
from stages._entry import main

if __name__ == "__main__":
    main(run_evaluate, matrix=("qf", "variant", "frozen", "controls"), alternate=run_evaluate_controls)
