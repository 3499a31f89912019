"""DVC stage: train CAS-Net g (or build an analytic simulator) for one operating point and measure its fidelity."""
from caisp.pipeline.cas import run_train_cas
from stages._entry import main

if __name__ == "__main__":
    main(run_train_cas, args=("point", "variant"))
