"""DVC stage: train CAS-Net g (or build an analytic simulator) for one QF and measure its fidelity."""
from caisp.pipeline import run_train_cas
from stages._entry import main

if __name__ == "__main__":
    main(run_train_cas, matrix=("qf", "variant"))
