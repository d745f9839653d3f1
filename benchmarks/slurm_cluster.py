"""A private one-node SLURM cluster on this machine, for the tests and the benchmarks.

``SlurmCluster(tmp_dir).start()`` runs munged + slurmctld + slurmd of this host (root,
``ProctrackType=proctrack/linuxproc``, ``TaskPlugin=task/none``,
``SelectType=select/cons_tres``, the node line from ``slurmd -C``) with its own
``slurm.conf`` (pass ``cluster.env``: it sets ``SLURM_CONF``), munge key and socket, ports,
state, spool and log folders; ``stop()`` cancels its jobs and ends the three daemons it
started, by pid. Needs Debian's ``slurm-wlm`` and ``munge`` (``make venv`` installs them).
"""

from __future__ import annotations

import os
from pathlib import Path


class SlurmCluster:
    """munged + slurmctld + slurmd of this machine in a temp dir, with their own config
    (``SLURM_CONF``), munge key and socket, state, spool and log folders and ports."""

    DAEMONS = ("slurmd", "slurmctld", "munged")

    def __init__(self, root: Path):
        import socket
        import subprocess

        self.root = root
        self.log = root / "log"
        for d in ("state", "spool", "log", "munge"):
            (root / d).mkdir(mode=0o700, parents=True, exist_ok=True)
        key = root / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        self.socket = root / "munge" / "munge.sock"
        ports = []
        for _ in range(2):
            with socket.socket() as s:
                s.bind(("", 0))
                ports.append(s.getsockname()[1])
        host = subprocess.run(["hostname", "-s"], capture_output=True, text=True,
                              check=True).stdout.strip()
        node = subprocess.run(["slurmd", "-C"], capture_output=True, text=True,
                              check=True).stdout.splitlines()[0]  # NodeName=<host> CPUs=...
        self.conf = root / "slurm.conf"
        self.conf.write_text("\n".join([
            "ClusterName=deepmetric-test", f"SlurmctldHost={host}",
            f"SlurmctldPort={ports[0]}", f"SlurmdPort={ports[1]}",
            "SlurmUser=root", "SlurmdUser=root", "AuthType=auth/munge", "CredType=cred/munge",
            f"AuthInfo=socket={self.socket}", f"StateSaveLocation={root / 'state'}",
            f"SlurmdSpoolDir={root / 'spool'}", f"SlurmctldPidFile={root / 'slurmctld.pid'}",
            f"SlurmdPidFile={root / 'slurmd.pid'}",
            f"SlurmctldLogFile={self.log / 'slurmctld.log'}",
            f"SlurmdLogFile={self.log / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
            "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core_Memory",
            "DefMemPerCPU=1024", "MpiDefault=none", "ReturnToService=2", "KillWait=2",
            # no accounting database: sacct fails; deepmetric reads job states from squeue
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/filetxt", f"JobCompLoc={self.log / 'jobcomp.txt'}",
            "JobAcctGatherType=jobacct_gather/none",
            node, "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP", ""]))
        self.env = {**os.environ, "SLURM_CONF": str(self.conf), "SLURM_PARTITION": "debug",
                    "DEEPMETRIC_SLURM_GPUS": "null", "DEEPMETRIC_SLURM_CPUS": "1",
                    "DEEPMETRIC_SLURM_MEM_GB": "2", "DEEPMETRIC_SLURM_TIMEOUT_MIN": "20"}
        self.pids: dict[str, int] = {}

    def start(self) -> "SlurmCluster":
        import subprocess
        import time

        r = self.root
        subprocess.run(["munged", "--force", f"--socket={self.socket}",
                        f"--key-file={r / 'munge' / 'munge.key'}",
                        f"--pid-file={r / 'munge' / 'munged.pid'}",
                        f"--log-file={self.log / 'munged.log'}",
                        f"--seed-file={r / 'munge' / 'munged.seed'}"], check=True, env=self.env)
        self.pids["munged"] = int((r / "munge" / "munged.pid").read_text())
        for daemon, args in (("slurmctld", ["-i"]), ("slurmd", [])):
            subprocess.run([daemon, *args], check=True, env=self.env)
            pid_file = r / f"{daemon}.pid"
            deadline = time.time() + 20
            while not pid_file.is_file() and time.time() < deadline:
                time.sleep(0.1)
            self.pids[daemon] = int(pid_file.read_text())
        deadline = time.time() + 60
        while time.time() < deadline:
            out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True,
                                 env=self.env).stdout.strip()
            if out == "idle":
                return self
            time.sleep(0.5)
        raise RuntimeError(f"the test SLURM cluster did not come up (sinfo: {out!r}); logs in "
                           f"{self.log}:\n{self.logs()}")

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n" + p.read_text(errors="replace")[-3000:]
                         for p in sorted(self.log.glob("*.log")))

    def stop(self) -> None:
        import signal
        import subprocess
        import time

        subprocess.run(["scancel", "--user", "root"], env=self.env, capture_output=True)
        for daemon in self.DAEMONS:  # only the processes this fixture started, by pid
            pid = self.pids.pop(daemon, None)
            if pid is None:
                continue
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            deadline = time.time() + 15
            while time.time() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
            else:
                os.kill(pid, signal.SIGKILL)
