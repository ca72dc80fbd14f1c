"""clustvit.inference.runtime.tune_malloc: a ViT forward stops page-faulting fresh memory on every pass."""

import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import resource, torch
    from clustvit.inference.runtime import tune_malloc
    from clustvit.models.vit import VisionTransformer
    print(tune_malloc())
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = VisionTransformer(img_size=512, embed_dim=384, depth=2, num_heads=6).eval()
    x = torch.randn(1, 3, 512, 512)  # 1025 tokens: MLP activations of 1.5-6 MB
    with torch.no_grad():
        for _ in range(3):  # warm-up: the tuned heap still grows during the first two passes
            model(x)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(3):
            model(x)
    print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // 3)
    """
)


def _faults_per_forward(tuned: bool) -> tuple[str, int]:
    env = {k: v for k, v in os.environ.items() if k != "CLUSTVIT_NO_MALLOC_TUNING"}
    if not tuned:
        env["CLUSTVIT_NO_MALLOC_TUNING"] = "1"
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, check=True)
    applied, faults = out.stdout.split()
    return applied, int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_tune_malloc_removes_page_faults_of_a_vit_forward():
    applied, tuned = _faults_per_forward(True)
    skipped, default = _faults_per_forward(False)
    assert (applied, skipped) == ("True", "False")
    assert default > 1000  # glibc's default hands the activations back and faults them in again
    assert tuned < default / 5
