"""DVC stage: real-codec evaluation of the controls (pretrained ISP, fine-tuned controls), once."""
from caisp.pipeline.evaluation import run_evaluate_controls
from stages._entry import main

if __name__ == "__main__":
    main(run_evaluate_controls, args=("regime",))
