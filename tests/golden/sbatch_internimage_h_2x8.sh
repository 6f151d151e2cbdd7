#!/bin/bash

# Parameters
#SBATCH --cpus-per-task=10
#SBATCH --error=/shared/runs/upernet_internimage_h-test/jobs/%j_0_log.err
#SBATCH --gpus-per-node=8
#SBATCH --job-name=upernet_internimage_h-test
#SBATCH --mem=491520MB
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=8
#SBATCH --open-mode=append
#SBATCH --output=/shared/runs/upernet_internimage_h-test/jobs/%j_0_log.out
#SBATCH --requeue
#SBATCH --signal=USR2@120
#SBATCH --time=2880
#SBATCH --wckey=submitit

# command
export SUBMITIT_EXECUTOR=slurm
srun --unbuffered --output /shared/runs/upernet_internimage_h-test/jobs/%j_%t_log.out --error /shared/runs/upernet_internimage_h-test/jobs/%j_%t_log.err /opt/venv/bin/python -u -m submitit.core._submit /shared/runs/upernet_internimage_h-test/jobs
