"""An overlay of the base plus one component, built with `kubectl kustomize` (the components' tests)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import yaml

K8S = Path(__file__).resolve().parents[1]


def build_with_component(component: Path, folder: Path, *more_components: Path, **fields: Any) -> list[dict[str, Any]]:
    """The documents kustomize renders for the base with `component` (then `more_components`) added,
    and any other kustomization `fields` (images, patches, ...) of the overlay (kubectl must be installed)."""
    overlay = folder / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                # kustomize takes relative paths only.
                "resources": [os.path.relpath(K8S / "base", overlay)],
                "components": [os.path.relpath(path, overlay) for path in (component, *more_components)],
                **fields,
            }
        )
    )
    result = subprocess.run(
        ["kubectl", "kustomize", str(overlay)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]
