"""DVC stage: real-codec BPP/PSNR evaluation of the aware ISP's seeds against every control."""
from caisp.pipeline.evaluation import run_evaluate
from stages._entry import main

if __name__ == "__main__":
    main(run_evaluate, args=("regime", "point", "variant", "unfrozen"))
