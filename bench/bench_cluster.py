"""Cluster benchmark: ``vimkit cluster create`` of a 100-node cluster, end to end.

Starts ``vimkit serve`` as its own process (SQLite in a temporary data directory, the simulated
infrastructure with its **default latencies**) on an inventory of 2 zones × 24 hosts of 64 vCPUs,
512 GB and 8 TB of disk, one VXLAN provider network and a 100 TB volume pool per zone. Then runs
the ``vimkit`` command as a separate process, as an operator would:

    vimkit cluster create -f cluster.yaml

for a cluster of 3 control-plane nodes (c1.control-plane, anti-affinity: three distinct hosts),
97 workers (w1.worker), one 20 GB volume per node, one network with a /16 subnet, and the PM job.
The time is the command's wall-clock time, from process start to exit (Python start-up and the
capacity checks included). Each run is followed by ``vimkit cluster delete`` (also timed) and a
check that nothing of the cluster is left.

    .venv/bin/python bench/bench_cluster.py [--runs 3] [--nodes 100] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_storage import ADMIN, free_port  # noqa: E402

VIMKIT = str(Path(sys.executable).with_name("vimkit"))

INVENTORY = """\
[[nfviPops]]
nfviPopId = "pop-1"

[[providerNetworks]]
providerNetworkId = "overlay"
networkType = "vxlan"
segmentationRanges = [[1000, 1999]]
mtu = 1450
""" + "".join(f"""
[[zones]]
zoneId = "zone-{z}"
zoneName = "Zone {z}"
nfviPopId = "pop-1"

[[hostGroups]]
namePattern = "zone-{z}-host-{{index:02d}}"
count = 24
zoneId = "zone-{z}"
vcpus = 64
memoryMb = 524288
diskGb = 8000

[[storagePools]]
poolId = "pool-{z}"
zoneId = "zone-{z}"
typeOfStorage = "volume"
capacityGb = 102400
""" for z in "ab")


def cluster_yaml(nodes: int) -> str:
    return f"""\
name: bench
networks:
  - name: nodes
    subnets:
      - name: v4
        cidr: 10.42.0.0/16
nodePools:
  - name: control-plane
    flavour: c1.control-plane
    count: 3
    image: ubuntu-24.04
    antiAffinity: true
    userData: |
      #cloud-config
      hostname: control-plane
    volumes:
      - sizeGb: 20
  - name: workers
    flavour: w1.worker
    count: {nodes - 3}
    image: ubuntu-24.04
    userData: |
      #cloud-config
      hostname: worker
    volumes:
      - sizeGb: 20
    labels:
      role: worker
"""


def vimkit(env: dict[str, str], *args: str) -> tuple[float, subprocess.CompletedProcess[str]]:
    began = time.perf_counter()
    done = subprocess.run([VIMKIT, *args], env=env, capture_output=True, text=True)
    return time.perf_counter() - began, done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vimkit-bench-cluster-") as tmp:
        work = Path(tmp)
        (work / "inventory.toml").write_text(INVENTORY)
        spec = work / "cluster.yaml"
        spec.write_text(cluster_yaml(args.nodes))
        port = free_port()
        env = {**os.environ, "VIMKIT_ADMIN_CLIENT_ID": ADMIN[0], "VIMKIT_ADMIN_CLIENT_SECRET": ADMIN[1],
               "VIMKIT_LOG_LEVEL": "warning", "VIMKIT_INVENTORY_FILE": str(work / "inventory.toml")}
        server = subprocess.Popen([VIMKIT, "serve", "--port", str(port), "--data-dir", str(work / "data")], env=env,
                                  stdout=subprocess.DEVNULL)
        base_url = f"http://127.0.0.1:{port}"
        client_env = {**os.environ, "VIMKIT_URL": base_url, "VIMKIT_CLIENT_ID": ADMIN[0],
                      "VIMKIT_CLIENT_SECRET": ADMIN[1], "VIMKIT_PROFILES": str(work / "none.toml")}
        try:
            for _ in range(400):
                try:
                    if httpx.get(f"{base_url}/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
            startup, _ = vimkit(client_env, "--help")
            print(f"vimkit cluster benchmark: {args.nodes} nodes (3 control-plane with anti-affinity), one volume each, "
                  f"one network; concurrency {args.concurrency}; `vimkit --help` takes {startup:.2f} s")
            print("| run | `cluster create` | `cluster delete` | computes | volumes | control-plane hosts |")
            print("|---|---|---|---|---|---|")
            for run in range(1, args.runs + 1):
                created, done = vimkit(client_env, "cluster", "create", "-f", str(spec), "-o", "json",
                                       "--concurrency", str(args.concurrency))
                if done.returncode != 0:
                    raise SystemExit(f"cluster create failed ({done.returncode}): {done.stderr}")
                import json

                summary = json.loads(done.stdout)
                nodes = summary["nodes"]
                hosts = {node["host"] for node in nodes if node["pool"] == "control-plane"}
                assert len(nodes) == args.nodes and all(node["state"] == "ALLOCATED" for node in nodes), nodes
                assert len(hosts) == 3, hosts
                deleted, done = vimkit(client_env, "cluster", "delete", "bench", "-y")
                if done.returncode != 0:
                    raise SystemExit(f"cluster delete failed: {done.stderr}")
                volumes = sum(len(node["volumes"]) for node in nodes)
                print(f"| {run} | {created:.2f} s | {deleted:.2f} s | {len(nodes)} | {volumes} | {len(hosts)} distinct |")
            left, done = vimkit(client_env, "compute", "list", "-o", "json")
            assert done.stdout.strip() == "[]", done.stdout
        finally:
            server.terminate()
            server.wait(timeout=15)


if __name__ == "__main__":
    main()
