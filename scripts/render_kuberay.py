"""Render kuberay/*.yaml (RayCluster, RayService GPU/CPU, RayJob) from one cluster layout and
the Serve configs in serve_configs/. Re-run after changing either:

    .venv/bin/python scripts/render_kuberay.py

tests/ops/test_kuberay.py validates the output against the vendored KubeRay CRDs and fails when
a RayService's serveConfigV2 no longer matches its serve_configs/ source.
"""

from __future__ import annotations

from pathlib import Path

import yaml

R = Path(__file__).resolve().parents[1]
RAY_VERSION = "2.60.0"
CPU_IMAGE = "ghcr.io/sapphire/sapphire-cpu:0.1.0"
GPU_IMAGE = "ghcr.io/sapphire/sapphire-gpu:0.1.0"
SEC = {
    "runAsNonRoot": True,
    "runAsUser": 1000,
    "runAsGroup": 1000,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
}


def container(name, image, cpu, mem, gpu=0, ports=None):
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
        "env": [
            {"name": "REDIS_HOST", "value": "sapphire-redis"},
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


HEAD_PORTS = [
    ("gcs-server", 6380),
    ("dashboard", 8265),
    ("client", 10001),
    ("metrics", 8080),
    ("serve", 8000),
]


def cluster_spec(gpu_group=True, autoscale=True):
    head = {
        "rayStartParams": {
            "port": "6380",
            "num-cpus": "0",
            "dashboard-host": "0.0.0.0",
            "metrics-export-port": "8080",
        },
        "template": pod(container("ray-head", CPU_IMAGE, 2, "8Gi", ports=HEAD_PORTS)),
    }
    workers = [
        {
            "groupName": "cpu-workers",
            "replicas": 1,
            "minReplicas": 1,
            "maxReplicas": 10,
            "rayStartParams": {"metrics-export-port": "8080"},
            "template": pod(
                container("ray-worker", CPU_IMAGE, 4, "8Gi", ports=[("metrics", 8080)])
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
                    container("ray-worker", GPU_IMAGE, 8, "32Gi", gpu=1, ports=[("metrics", 8080)]),
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


def dump(path, header, doc):
    text = header + yaml.dump(doc, Dumper=D, sort_keys=False, width=100)
    (R / "kuberay" / path).write_text(text)


dump(
    "raycluster.yaml",
    """# Sapphire RayCluster (KubeRay ray.io/v1): a head that schedules nothing (num-cpus 0), CPU
# workers for the trading actors, GPU workers for the Serve LLM deployment, in-tree autoscaling
# between minReplicas and maxReplicas. GCS on 6380 (6379 is Redis's), token auth on; the
# dashboard listens on the pod network because the operator submits jobs and Serve configs
# through it (token-protected). Validated against the vendored CRD schemas in kuberay/crds/.
# Needs: namespace sapphire, secret sapphire-redis (key password), PVC sapphire-runs.
""",
    {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": META("sapphire"),
        "spec": cluster_spec(),
    },
)
for variant, src in (("gpu", "llm_gpu.yaml"), ("cpu", "llm_cpu.yaml")):
    serve_text = (R / "serve_configs" / src).read_text()
    serve_body = (
        "\n".join(x for x in serve_text.splitlines() if not x.startswith("#")).strip() + "\n"
    )
    spec = {
        "serveConfigV2": serve_body,
        "rayClusterConfig": cluster_spec(gpu_group=(variant == "gpu")),
    }
    spec = {
        "serviceUnhealthySecondThreshold": 900,
        "deploymentUnhealthySecondThreshold": 300,
        **spec,
    }
    name = "rayservice.yaml" if variant == "gpu" else "rayservice-cpu.yaml"
    dump(
        name,
        f"""# Sapphire LLM decisions as a KubeRay RayService ({variant.upper()}): serveConfigV2 is
# serve_configs/{src} verbatim (comments dropped); tests/ops/test_kuberay.py fails if they drift.
# The cluster is raycluster.yaml's{"" if variant == "gpu" else " without the GPU group"}.
""",
        {
            "apiVersion": "ray.io/v1",
            "kind": "RayService",
            "metadata": META(f"sapphire-llm{'' if variant == 'gpu' else '-cpu'}"),
            "spec": spec,
        },
    )
job_cluster = cluster_spec(gpu_group=False)
dump(
    "rayjob.yaml",
    """# The Sapphire main job as a KubeRay RayJob: a fresh cluster (CPU workers only), the run,
# then the cluster is deleted. The image carries the code in /app (docker/Dockerfile.cpu).
""",
    {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": META("sapphire-main"),
        "spec": {
            "entrypoint": "cd /app && python -m actors.main --config configs/demo.yaml",
            "runtimeEnvYAML": 'env_vars:\n  PYTHONUNBUFFERED: "1"\n',
            "submissionMode": "K8sJobMode",
            "shutdownAfterJobFinishes": True,
            "ttlSecondsAfterFinished": 600,
            "activeDeadlineSeconds": 3600,
            "backoffLimit": 0,
            "rayClusterSpec": job_cluster,
        },
    },
)
print("ok")
