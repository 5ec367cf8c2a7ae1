"""The `anomalycontrol` synthesis method: fit the SGA adapter once per dataset, generate in batches."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState

from acbench.data.category import CategoryData
from acbench.data.io import IMAGE_SUFFIXES, load_mask, load_rgb
from acbench.errors import UserError, require_folder
from acbench.synthesis import GenerationRequest, Sample, Synthesizer, WeightRequirement
from acbench_methods.anomalycontrol.ablations import MODULES, VARIANTS
from acbench_methods.anomalycontrol.cache import Reference
from acbench_methods.anomalycontrol.model import AnomalyControlModel, initialise_adapter
from acbench_methods.anomalycontrol.options import RELEASED_MASKS_ENV, AnomalyControlOptions
from acbench_methods.anomalycontrol.presets import BLIP2_ITM_REPO, IP_ADAPTER_REPO, SCHEDULES
from acbench_methods.anomalycontrol.references import (
    PAINT_THRESHOLD,
    Captions,
    TargetMasks,
    load_captions,
    reference_entry,
    reference_of,
    target_mask_spec,
    training_view,
)
from acbench_methods.anomalycontrol.sga import SemanticGuidedAdapter
from acbench_methods.anomalycontrol.train import prepare_training_set, train_adapter
from acbench_methods.diffusion.components import SD15_INPAINT_REPO

log = logging.getLogger(__name__)

FIT_INFO = "anomalycontrol.json"
REFERENCES = "references.json"
DATASET_ADAPTER = "_all"


class AnomalyControl(Synthesizer):
    Options = AnomalyControlOptions
    fit_scope = "dataset"
    description = "AnomalyControl: SD-inpainting with CSM/ASEA cross-modal features through the SGA adapter"
    # `acbench selftest`: full-size SD-1.5 + BLIP-2 architectures (random) on a GPU, tiny networks on the CPU
    # (`sd15` under the self-test's `weights: random` is the full-size architecture with random weights)
    selftest_options = {"cuda": {"model": "sd15", "schedule": "tiny"},
                        "cpu": {"model": "tiny", "schedule": "tiny"}}

    #: What each `ablation:` variant switches off (read by the report's ✓/✗ grid as well as the model).
    ablations = VARIANTS
    ablation_modules = MODULES

    def __init__(self, options=None, weights: str = "pretrained") -> None:
        super().__init__(options, weights)
        self.options = self.options.resolved()  # every preset-dependent field set (and hashed) explicitly
        self._captions: Captions | None = None
        self._any_type_pools: set[str] = set()  # `references: dataset` types drawn from every type
        self._model: AnomalyControlModel | None = None
        self._loaded_adapter: Path | None = None
        self._pretrained_provenance: dict[str, Any] | None = None
        self.last_train_reports: dict[str, Any] = {}

    # ------------------------------------------------------------------ weights and provenance
    @property
    def policy(self) -> str:
        return "random" if self.options.model == "tiny" else self.weights_policy

    def required_weights(self) -> list[WeightRequirement]:
        opts = self.options
        if opts.model == "tiny":
            return []
        needed = [
            WeightRequirement(
                "stable-diffusion-inpainting",
                f"SD-1.5-inpainting ({SD15_INPAINT_REPO})",
                repo_id=SD15_INPAINT_REPO,
                path=None if opts.sd_inpainting_path is None else str(opts.sd_inpainting_path),
            )
        ]
        if VARIANTS[opts.ablation].sga:
            needed.append(
                WeightRequirement(
                    "blip2-itm-vit-g",
                    f"BLIP-2 Q-Former with text input ({BLIP2_ITM_REPO})",
                    repo_id=BLIP2_ITM_REPO,
                    path=None if opts.blip2_path is None else str(opts.blip2_path),
                )
            )
            if opts.sga_init == "ip-adapter" or opts.ip_adapter_path is not None:
                needed.append(
                    WeightRequirement(
                        "ip-adapter-sd15",
                        f"SGA initialisation ({IP_ADAPTER_REPO} models/ip-adapter_sd15)",
                        repo_id=IP_ADAPTER_REPO,
                        path=None if opts.ip_adapter_path is None else str(opts.ip_adapter_path),
                    )
                )
        return needed

    def check(self) -> None:
        """Before any job: the captions source and the preset's target masks must be there."""
        load_captions(self.options.captions)
        spec = target_mask_spec(self.options)
        if self.options.mask_source is None and spec.name == "folder":  # the official preset's released masks
            require_folder(
                spec.options["path"], f"method anomalycontrol: ${RELEASED_MASKS_ENV}",
                "AnomalyDiffusion's generated masks, <category>/<type>/*.jpg", IMAGE_SUFFIXES,
            )  # fmt: skip

    def captions(self) -> Captions:
        if self._captions is None:
            self._captions = load_captions(self.options.captions)
        return self._captions

    def provenance(self) -> dict[str, Any]:
        if self._model is not None:
            prov = dict(self._model.provenance)
        elif self._pretrained_provenance is not None:
            prov = dict(self._pretrained_provenance)
        else:
            prov = {
                "random_weights": self.options.model == "tiny" or self.weights_policy == "random",
                "preset": self.options.preset,
            }
        if self._captions is not None and (self._captions.found or self._captions.fallback):
            prov.update(self._captions.provenance())
        if self._model is not None and self._model.speed_facts() is not None:  # how generation ran
            prov["generation_speed"] = self._model.speed_facts()
        if self._any_type_pools:
            prov["references_of_any_type"] = sorted(self._any_type_pools)
        # columns of every result row computed on this method's output (the harness copies them)
        prov["row_tags"] = {"generator_preset": self.options.preset}
        if "captions" in prov:
            prov["row_tags"]["generator_captions"] = prov["captions"]
        return prov

    def model(self, device: str = "cpu", seed: int = 0) -> AnomalyControlModel:
        """The networks, built once per instance (a job), reused by every call."""
        if self._model is None or self._model.device != device:
            self._model = AnomalyControlModel.build(
                self.options, self.policy, device, seed, dtype=self._dtype(device)
            )
        return self._model

    def _mixed_precision(self, device: str) -> str:
        if self.options.mixed_precision != "auto":
            return self.options.mixed_precision
        return "fp16" if device.startswith("cuda") else "no"

    def _dtype(self, device: str) -> torch.dtype:
        """The frozen networks' dtype: half precision wherever training runs mixed precision."""
        return {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[
            self._mixed_precision(device)
        ]

    # ------------------------------------------------------------------ fit
    def fit(self, categories: list[CategoryData], workdir: Path, seed: int, device: str = "cpu") -> None:
        workdir = Path(workdir)
        if self.options.pretrained_fit is not None:
            self._copy_pretrained_fit(Path(self.options.pretrained_fit), workdir)
            return
        model = self.model(device, seed)
        info: dict[str, Any] = {
            "model": self.options.model,
            "ablation": self.options.ablation,
            "preset": self.options.preset,
            "adapters": {},
        }
        if model.adapter is not None:
            groups = (
                {c.category: [c] for c in categories}
                if self.options.per_category
                else {DATASET_ADAPTER: categories}
            )
            for name, group in groups.items():
                info["adapters"][name] = self._fit_group(model, name, group, workdir, seed, device)
        if not PartialState().is_main_process:  # under `accelerate launch`: one writer
            return
        captions = self.captions()
        table = [
            reference_entry(ex, data, captions, self.options.caption_template)
            for data in categories
            for examples in data.synthesis.values()
            for ex in examples
        ]
        (workdir / REFERENCES).write_text(json.dumps(table, indent=1))
        info["provenance"] = self.provenance()
        (workdir / FIT_INFO).write_text(json.dumps(info, indent=1, default=str))

    def _fit_group(
        self,
        model: AnomalyControlModel,
        name: str,
        categories: list[CategoryData],
        workdir: Path,
        seed: int,
        device: str,
    ) -> dict[str, Any]:
        opts, size = self.options, model.preset.resolution
        captions = self.captions()
        examples = [
            (ex, data) for data in categories for atype in sorted(data.synthesis) for ex in data.synthesis[atype]
        ]
        refs = [
            reference_of(ex, data, captions, opts.caption_template, size, raw=opts.csm_image == "raw")
            for ex, data in examples
        ]
        if not refs:
            raise UserError(
                f"anomalycontrol: no real anomalies to train on in {[c.category for c in categories]} "
                "(the synthesis split is empty)"
            )
        fresh = SemanticGuidedAdapter(
            model.components.unet, model.csm.feature_dim, model.preset.proj_dim, model.preset.num_tokens
        )  # each group starts from the same init
        initialise_adapter(fresh, opts, self.policy)
        model.adapter.load_state_dict(fresh.state_dict())
        features = model.reference_features(refs)
        views = [training_view(ex, ref, size, opts.train_resize) for (ex, _), ref in zip(examples, refs)]
        data = prepare_training_set(
            model.components,
            [image for image, _ in views],
            [mask for _, mask in views],
            [r.caption for r in refs],
            features,
            paint_threshold=PAINT_THRESHOLD[opts.train_resize],
        )
        schedule = SCHEDULES[opts.schedule]
        checkpoints = self._checkpoint_dir(workdir, name, categories, seed, model)
        mixed = self._mixed_precision(device)
        report = train_adapter(
            model.components,
            model.adapter,
            data,
            steps=opts.train_steps or schedule.train_steps,
            batch_size=schedule.batch_size,
            grad_accumulation=schedule.grad_accumulation,
            learning_rate=schedule.learning_rate,
            seed=seed,
            checkpoint_dir=checkpoints,
            checkpoint_every=schedule.checkpoint_every,
            device=device,
            mixed_precision=mixed,
            train_scale=opts.train_scale,
            legacy_mask_range=opts.training.legacy_mask_range,
        )
        filename = f"adapter-{name}.safetensors"
        state = PartialState()
        state.wait_for_everyone()
        if state.is_main_process:
            model.adapter.save(workdir / filename)
            shutil.rmtree(checkpoints, ignore_errors=True)  # the adapter is in the artifact now
        self.last_train_reports[name] = report
        return {
            "file": filename,
            "categories": sorted(c.category for c in categories),
            "images": len(refs),
            "steps": report.steps,
            "resumed_from": report.resumed_from,
            "final_loss": report.losses[-1] if report.losses else None,
        }

    def _copy_pretrained_fit(self, source: Path, workdir: Path) -> None:
        info_file = source / FIT_INFO
        if not info_file.is_file():
            raise UserError(
                f"pretrained_fit: {source} has no {FIT_INFO}; train it with "
                "`python -m acbench_methods.anomalycontrol --out DIR`"
            )
        info = json.loads(info_file.read_text())
        if info["model"] != self.options.model or info["ablation"] != self.options.ablation:
            raise UserError(
                f"pretrained_fit: {source} holds model '{info['model']}' / ablation "
                f"'{info['ablation']}', the protocol asks for '{self.options.model}' / "
                f"'{self.options.ablation}'"
            )
        if info.get("preset", self.options.preset) != self.options.preset:
            raise UserError(
                f"pretrained_fit: {source} was trained under preset '{info['preset']}', the protocol asks "
                f"for '{self.options.preset}'"
            )
        for path in [info_file, source / REFERENCES] + [
            source / a["file"] for a in info["adapters"].values()
        ]:
            if path.is_file():
                shutil.copy2(path, workdir / path.name)
        self._pretrained_provenance = info.get("provenance", {})

    def _checkpoint_dir(
        self, workdir: Path, name: str, categories: list[CategoryData], seed: int, model: AnomalyControlModel
    ) -> Path:
        """Outside the job's temporary folder, so an interrupted fit resumes where it stopped.

        The key covers everything the fit reads: the options, the weights (policy and where each network
        came from), and per category the dataset root, the image size and the exact synthesis split (every
        reference image and mask file), so a changed split, size, dataset or backbone starts afresh.
        """
        data = [
            {
                "category": c.category,
                "root": str(Path(c.root).resolve()),
                "image_size": c.image_size,
                "synthesis": {
                    t: [[str(e.image_path), str(e.mask_path)] for e in ex] for t, ex in sorted(c.synthesis.items())
                },
            }
            for c in sorted(categories, key=lambda c: c.category)
        ]
        key = json.dumps(
            [self.options.model_dump(mode="json"), self.weights_policy, model.provenance, data, seed, name],
            sort_keys=True,
            default=str,
        )
        return workdir.parent / ".anomalycontrol-checkpoints" / hashlib.sha256(key.encode()).hexdigest()[:16]

    # ------------------------------------------------------------------ generate
    def _prepare(self, data: CategoryData, request: GenerationRequest) -> AnomalyControlModel:
        model = self.model(request.device, request.seed)
        if model.adapter is None:
            return model
        if request.fit_dir is None or not (Path(request.fit_dir) / FIT_INFO).is_file():
            raise UserError(
                "anomalycontrol: generate needs the fit artifact (its adapter); run the fit stage first"
            )
        info = json.loads((Path(request.fit_dir) / FIT_INFO).read_text())
        if info["model"] != self.options.model or info["ablation"] != self.options.ablation:
            raise UserError(
                f"{request.fit_dir}: adapter was trained for model '{info['model']}' / ablation "
                f"'{info['ablation']}', not '{self.options.model}' / '{self.options.ablation}'"
            )
        if info.get("preset", self.options.preset) != self.options.preset:
            raise UserError(
                f"{request.fit_dir}: adapter was trained under preset '{info['preset']}', "
                f"not '{self.options.preset}'; fit it again or set preset: {info['preset']}"
            )
        entry = info["adapters"].get(data.category) or info["adapters"].get(DATASET_ADAPTER)
        if entry is None:
            raise UserError(f"{request.fit_dir}: no adapter for category '{data.category}'")
        if data.category not in entry.get("categories", [data.category]):
            raise UserError(
                f"{request.fit_dir}: the adapter was trained on {', '.join(entry['categories'])}, not on "
                f"'{data.category}'; fit it again with this category"
            )
        path = Path(request.fit_dir) / entry["file"]
        if self._loaded_adapter != path:
            model.load_adapter(path)
            self._loaded_adapter = path
            # the adapter's start is the fit's, not this job's fresh build
            model.provenance["sga_init"] = info.get("provenance", {}).get("sga_init", model.provenance["sga_init"])
        return model

    def generate(self, data: CategoryData, request: GenerationRequest) -> Iterator[Sample]:
        model = self._prepare(data, request)
        opts, rng = self.options, request.rng()
        pool = self._reference_pool(data, request)
        masks = TargetMasks(target_mask_spec(opts))
        fixed_seed = opts.sampling_seed if isinstance(opts.sampling_seed, int) else None
        size = model.preset.resolution
        refs: dict[int, Reference] = {}
        features: dict[int, Any] = {}
        for start in range(0, request.count, opts.batch_size):
            # Draw a batch (normal, target mask, reference, seed), then paint it in one call; only one
            # batch of images is in memory at a time.
            batch = []
            for _ in range(min(opts.batch_size, request.count - start)):
                index = int(rng.integers(len(data.normal_train)))
                normal = data.normal_image(index)
                target = masks.sample(data, request.anomaly_type, normal, rng)
                reference, seed = int(rng.integers(len(pool))), int(rng.integers(2**31 - 1))
                # official: the same noise seed (42) for every image, as the released script samples
                batch.append((index, normal, target, reference, seed if fixed_seed is None else fixed_seed))
            new = sorted({b[3] for b in batch} - set(refs))
            raw = opts.csm_image == "raw"
            for i in new:
                refs[i] = Reference(
                    load_rgb(pool[i]["image"], size),
                    load_mask(pool[i]["mask"], size),
                    pool[i]["caption"],
                    load_rgb(pool[i]["image"]) if raw else None,
                    load_mask(pool[i]["mask"]) if raw else None,
                )
            if model.adapter is not None and new:  # one CSM feature per reference, computed once
                features.update(zip(new, model.reference_features([refs[i] for i in new])))
            batch_features = (
                torch.stack([features[b[3]] for b in batch]) if model.adapter is not None else None
            )
            prompts = [self._prompt(refs[b[3]], data, request.anomaly_type) for b in batch]
            images = model.generate(
                [b[1] for b in batch], [b[2] for b in batch], prompts, [b[4] for b in batch], batch_features
            )
            for b, image in zip(batch, images):
                source = data.normal_train[b[0]].relative_to(data.root).as_posix()
                yield Sample(image, b[2], request.anomaly_type, source)

    def _reference_pool(self, data: CategoryData, request: GenerationRequest) -> list[dict[str, str]]:
        """Reference anomalies: this category's of the type, or (`references: dataset`) any category's."""
        atype = request.anomaly_type
        if (
            self.options.references == "dataset"
            and request.fit_dir is not None
            and (Path(request.fit_dir) / REFERENCES).is_file()
        ):
            table = json.loads((Path(request.fit_dir) / REFERENCES).read_text())
            pool = [r for r in table if r["anomaly_type"] == atype]
            if not pool:  # no reference of this type anywhere: any type's (counted in the provenance)
                log.warning("anomalycontrol: no reference of type '%s' in the dataset; using every type's", atype)
                self._any_type_pools.add(f"{data.category}/{atype}")
                pool = table
        else:
            captions = self.captions()
            pool = [
                reference_entry(ex, data, captions, self.options.caption_template)
                for ex in data.synthesis.get(atype) or []
            ]
        if not pool:
            raise UserError(
                f"anomalycontrol: no reference of type '{atype}' in {data.category} "
                "(the synthesis split is empty for it)"
            )
        return pool

    def _prompt(self, ref: Reference, data: CategoryData, anomaly_type: str) -> str:
        if self.options.prompt == "reference":
            return ref.caption
        return self.options.caption_template.format(
            category=data.category.replace("_", " "), defect=data.text(anomaly_type)
        )


__all__ = ["AnomalyControl"]
