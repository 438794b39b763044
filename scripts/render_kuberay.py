"""Render kuberay/*.yaml (RayCluster, RayService GPU/CPU, RayJob) from one cluster layout and
the Serve configs in serve_configs/. Re-run after changing either:

    .venv/bin/python scripts/render_kuberay.py          # writes kuberay/*.yaml
    .venv/bin/python scripts/render_kuberay.py --check  # exit 1 if a file differs

Rendering is deterministic: rendering twice, or rendering the committed files, changes nothing.
tests/ops/test_kuberay.py validates the output against the vendored KubeRay CRDs and fails when
a committed manifest is not what this script renders (so a hand edit, or a serve_configs/
change without a re-render, fails there).
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

R = Path(__file__).resolve().parents[1]
RAY_VERSION = "2.60.0"
CPU_IMAGE = "ghcr.io/sapphire/sapphire-cpu:0.1.0"
GPU_IMAGE = "ghcr.io/sapphire/sapphire-gpu:0.1.0"
# The RayJob's program, quoted for the shell KubeRay pastes it into (see rayjob.yaml's header).
# The config is the demo with Redis at the sapphire-redis Service (configs/kubernetes.yaml).
ENTRYPOINT = "bash -c 'cd /app && python -m actors.main --config configs/kubernetes.yaml'"
SEC = {
    "runAsNonRoot": True,
    "runAsUser": 1000,
    "runAsGroup": 1000,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
}


def container(name, image, cpu, mem, gpu=0, ports=None, autoscale=True):
    res = {"requests": {"cpu": str(cpu), "memory": mem}, "limits": {"cpu": str(cpu), "memory": mem}}
    if gpu:
        res["requests"]["nvidia.com/gpu"] = gpu
        res["limits"]["nvidia.com/gpu"] = gpu
    c = {
        "name": name,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "resources": res,
        "securityContext": SEC,
        # The Redis host is not an env var: configs/kubernetes.yaml names it (redis.host), and
        # its redis.password_env names this variable, the only one RedisConfig reads.
        "env": [
            {
                "name": "REDIS_PASSWORD",
                "valueFrom": {"secretKeyRef": {"name": "sapphire-redis", "key": "password"}},
            },
        ],
        "volumeMounts": [
            {"name": "ray-logs", "mountPath": "/tmp/ray"},
            {"name": "runs", "mountPath": "/app/runs"},
        ],
    }
    if autoscale:
        # The LLM app's builder reads it (actors/serve/llm_app.py): GPUs/CPUs that are not up
        # yet are the autoscaler's to add (gpu-workers start at 0), so the replica's request
        # waits for them instead of being refused at deploy. Every Ray process inherits it.
        c["env"].append({"name": "SAPPHIRE_CLUSTER_AUTOSCALES", "value": "1"})
    if ports:
        c["ports"] = [{"containerPort": p, "name": n} for n, p in ports]
    return c


def pod(c, gpu=False):
    spec = {
        "containers": [c],
        "securityContext": {"fsGroup": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
        "volumes": [
            {"name": "ray-logs", "emptyDir": {}},
            {"name": "runs", "persistentVolumeClaim": {"claimName": "sapphire-runs"}},
        ],
    }
    if gpu:
        spec["tolerations"] = [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
        ]
        spec["nodeSelector"] = {"nvidia.com/gpu.present": "true"}
    return {"metadata": {"labels": {"app.kubernetes.io/part-of": "sapphire"}}, "spec": spec}


# GCS on KubeRay's default 6379: the autoscaler sidecar runs `ray kuberay-autoscaler` without
# --gcs-address and looks for the GCS on <pod IP>:6379 (ray-project/kuberay#1644), so a `port`
# in rayStartParams leaves it unable to scale. Nothing else listens there: Redis is its own
# Service (sapphire-redis), not a process in the head pod.
HEAD_PORTS = [
    ("gcs-server", 6379),
    ("dashboard", 8265),
    ("client", 10001),
    ("metrics", 8080),
    ("serve", 8000),
]


def cluster_spec(gpu_group=True, autoscale=True):
    head = {
        "rayStartParams": {
            "num-cpus": "0",
            "dashboard-host": "0.0.0.0",
            "metrics-export-port": "8080",
        },
        "template": pod(
            container("ray-head", CPU_IMAGE, 2, "8Gi", ports=HEAD_PORTS, autoscale=autoscale)
        ),
    }
    workers = [
        {
            "groupName": "cpu-workers",
            "replicas": 1,
            "minReplicas": 1,
            "maxReplicas": 10,
            "rayStartParams": {"metrics-export-port": "8080"},
            "template": pod(
                container(
                    "ray-worker",
                    CPU_IMAGE,
                    4,
                    "8Gi",
                    ports=[("metrics", 8080)],
                    autoscale=autoscale,
                )
            ),
        }
    ]
    if gpu_group:
        workers.append(
            {
                "groupName": "gpu-workers",
                "replicas": 0,
                "minReplicas": 0,
                "maxReplicas": 2,
                "rayStartParams": {"num-gpus": "1", "metrics-export-port": "8080"},
                "template": pod(
                    container(
                        "ray-worker",
                        GPU_IMAGE,
                        8,
                        "32Gi",
                        gpu=1,
                        ports=[("metrics", 8080)],
                        autoscale=autoscale,
                    ),
                    gpu=True,
                ),
            }
        )
    spec = {"rayVersion": RAY_VERSION, "authOptions": {"mode": "token"}}
    if autoscale:
        spec["enableInTreeAutoscaling"] = True
        spec["autoscalerOptions"] = {
            "upscalingMode": "Default",
            "idleTimeoutSeconds": 60,
            "imagePullPolicy": "IfNotPresent",
            "securityContext": SEC,
            "resources": {
                "requests": {"cpu": "500m", "memory": "512Mi"},
                "limits": {"cpu": "500m", "memory": "512Mi"},
            },
        }
    spec["headGroupSpec"] = head
    spec["workerGroupSpecs"] = workers
    return spec


def META(n: str) -> dict[str, object]:
    return {
        "name": n,
        "namespace": "sapphire",
        "labels": {"app.kubernetes.io/part-of": "sapphire"},
    }


class D(yaml.SafeDumper):
    def ignore_aliases(self, data):
        return True


def _str(dumper, data):
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


D.add_representer(str, _str)


def text(header, doc):
    return header + yaml.dump(doc, Dumper=D, sort_keys=False, width=100)


def serve_body(src):
    """serve_configs/<src> without its leading comment block (the file's header, which
    speaks of `serve run` and pasting); everything after it is kept verbatim, comments
    included, so the embedded document reads as its source does."""
    lines = (R / "serve_configs" / src).read_text().splitlines()
    start = 0
    while start < len(lines) and (lines[start].startswith("#") or not lines[start].strip()):
        start += 1
    return "\n".join(lines[start:]).strip() + "\n"


CLUSTER_HEADER = """\
# Sapphire RayCluster (KubeRay ray.io/v1): a head that schedules nothing (num-cpus 0), CPU
# workers for the trading actors, GPU workers for the Serve LLM deployment, in-tree autoscaling
# between minReplicas and maxReplicas. GCS on KubeRay's default 6379 inside the head pod (the
# autoscaler sidecar finds it only there; Redis is the sapphire-redis Service, not in this pod),
# token auth on; the dashboard listens on the pod network because the operator submits jobs and
# Serve configs through it (token-protected). Validated against the vendored CRD schemas in
# kuberay/crds/. Jobs run configs/kubernetes.yaml (Redis at sapphire-redis, its password from
# REDIS_PASSWORD). Needs: namespace sapphire, secret sapphire-redis (key password), PVC
# sapphire-runs.
"""
SERVICE_HEADER = """\
# Sapphire LLM decisions as a KubeRay RayService ({variant}): serveConfigV2 is
# serve_configs/{src} verbatim, comments included, less its header comment;
# tests/ops/test_kuberay.py fails if they drift (re-run scripts/render_kuberay.py).
# The cluster is raycluster.yaml's{without}.
"""


def render():
    """{file name in kuberay/: its text}."""
    out = {}
    out["raycluster.yaml"] = text(
        CLUSTER_HEADER,
        {
            "apiVersion": "ray.io/v1",
            "kind": "RayCluster",
            "metadata": META("sapphire"),
            "spec": cluster_spec(),
        },
    )
    for variant, src in (("gpu", "llm_gpu.yaml"), ("cpu", "llm_cpu.yaml")):
        metadata = META(f"sapphire-llm{'' if variant == 'gpu' else '-cpu'}")
        # KubeRay's own initializing timeout (the spec's *UnhealthySecondThreshold fields are
        # deprecated and read by nothing, kuberay#1685): a GPU node to provision, an image to
        # pull and a model to load fit in 15 min; past it the RayService is marked failed.
        metadata["annotations"] = {"ray.io/initializing-timeout": "15m"}
        spec = {
            "serveConfigV2": serve_body(src),
            "rayClusterConfig": cluster_spec(gpu_group=(variant == "gpu")),
        }
        name = "rayservice.yaml" if variant == "gpu" else "rayservice-cpu.yaml"
        out[name] = text(
            SERVICE_HEADER.format(
                variant=variant.upper(),
                src=src,
                without="" if variant == "gpu" else " without the GPU group",
            ),
            {
                "apiVersion": "ray.io/v1",
                "kind": "RayService",
                "metadata": metadata,
                "spec": spec,
            },
        )
    out["rayjob.yaml"] = text(
        """# The Sapphire main job as a KubeRay RayJob: a fresh cluster (CPU workers only), the run,
# then the cluster is deleted. The image carries the configs in /app (docker/Dockerfile.cpu).
# KubeRay pastes the entrypoint unquoted into the submitter's shell command, so it is one
# quoted `bash -c '...'`: unquoted, `&&` ends `ray job submit` and the rest runs in the submitter.
""",
        {
            "apiVersion": "ray.io/v1",
            "kind": "RayJob",
            "metadata": META("sapphire-main"),
            "spec": {
                "entrypoint": ENTRYPOINT,
                "runtimeEnvYAML": 'env_vars:\n  PYTHONUNBUFFERED: "1"\n',
                "submissionMode": "K8sJobMode",
                "shutdownAfterJobFinishes": True,
                "ttlSecondsAfterFinished": 600,
                "activeDeadlineSeconds": 3600,
                "backoffLimit": 0,
                "rayClusterSpec": cluster_spec(gpu_group=False),
            },
        },
    )
    return out


def main(argv):
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a file differs")
    args = parser.parse_args(argv)  # --help, or an unknown option, before anything renders
    rendered = render()
    if args.check:
        stale = [n for n, t in rendered.items() if (R / "kuberay" / n).read_text() != t]
        print("stale: " + ", ".join(stale) if stale else "ok")
        return 1 if stale else 0
    for name, body in rendered.items():
        (R / "kuberay" / name).write_text(body)
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
