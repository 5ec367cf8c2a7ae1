"""AnoGen on the tiny random LDM-shaped base: what textual inversion trains, what blended sampling keeps,
where boxes land, what the SyntheticSet records, and AnoGen's released embedding files."""

from __future__ import annotations

import csv
import pickle
from dataclasses import replace

import cv2
import numpy as np
import pytest
import torch

from acbench import registry
from acbench.data.io import load_rgb
from acbench.errors import UserError
from acbench.synthesis import GenerationRequest, SyntheticSet, write_synthetic_set
from acbench_methods.anogen import PRESETS, items_of, paint
from acbench_methods.anogen.boxes import RANGES, draw_box, product_foreground, sample_box
from acbench_methods.anogen.embeddings import export_released, import_released, new_table, train_token
from acbench_methods.anomalydiffusion import to_tensor
from acbench_methods.anomalydiffusion.base import PLACEHOLDER, tiny_base
from acbench_methods.anomalydiffusion.embedding import TokenTable, word_embedding
from acbench_methods.anomalydiffusion.train import TrainConfig

TINY = {"model": "tiny", "schedule": "tiny"}


def method(**options):
    return registry.load("methods", "anogen")({**TINY, **options}, weights="random")


@pytest.fixture(scope="module")
def fitted(brick, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("anogen-fit")
    method().fit([brick], workdir, seed=0)
    return workdir


def frozen_state(base) -> dict[str, torch.Tensor]:
    return {f"{name}.{k}": v.detach().clone() for name in ("unet", "vae", "text_encoder")
            for k, v in getattr(base, name).state_dict().items()}


def test_one_ti_step_changes_only_the_placeholder_row(brick, tmp_path):
    base = tiny_base()
    before = frozen_state(base)
    vocab = base.text_encoder.get_input_embeddings().weight.detach().clone()
    row = base.tokenizer.convert_tokens_to_ids(PLACEHOLDER)
    cfg = TrainConfig(steps=1, batch_size=2, learning_rate=0.05, save_every=10, masked_loss=False, augment=False)
    table, losses = train_token(base, "brick/hole", items_of([brick], base.resolution), cfg, tmp_path, 0, "cpu")
    assert len(losses) == 1

    def effective(vector):  # the vocabulary the text encoder sees with "*" bound to `vector`
        out = vocab.clone()
        out[row] = vector
        return out

    changed = (effective(table.vectors[0, 0].detach()) != effective(word_embedding(base, "defect"))).any(dim=1)
    assert changed.nonzero().flatten().tolist() == [row]
    after = frozen_state(base)
    assert all(torch.equal(before[k], after[k]) for k in before)


def expected_alphas_cumprod() -> torch.Tensor:
    """The LDM schedule computed here, not taken from diffusers: scaled-linear betas 0.00085 .. 0.012."""
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, dim=0)


def test_blended_steps_keep_the_noised_normal_latent_outside_the_box(brick):
    base = tiny_base()
    normals = [brick.normal_image(0), brick.normal_image(1)]
    side = normals[0].shape[0]
    boxes = [draw_box((side, side), 0, 0, side // 2, side // 2, 0), draw_box((side, side), side // 4, side // 2,
                                                                           side // 2, side // 2, 0)]
    torch.manual_seed(1)
    vectors = torch.randn(2, 1, base.hidden_size)
    seen = []
    preset = replace(PRESETS["tiny"], ddim_steps=4)
    paint(base, vectors, normals, boxes, preset, torch.Generator().manual_seed(5),
          on_step=lambda t, z, _noised: seen.append((int(t), z.clone())))
    assert len(seen) == 4 and [t for t, _ in seen] == sorted((t for t, _ in seen), reverse=True)

    z0 = base.encode(torch.stack([to_tensor(n, base.resolution) for n in normals])).double()
    latent = z0.shape[-1]
    cell = side // latent  # image pixels per latent cell
    blocks = [torch.from_numpy(b.reshape(latent, cell, latent, cell).transpose(0, 2, 1, 3).reshape(latent, latent, -1))
              for b in boxes]
    outside = torch.stack([~b.any(-1) for b in blocks])[:, None].expand_as(z0)  # cells wholly outside the box
    inside = torch.stack([b.all(-1) for b in blocks])[:, None].expand_as(z0)
    assert outside.any() and inside.any()
    acp = expected_alphas_cumprod()
    gen = torch.Generator().manual_seed(5)  # the sampler's draws, in order: start noise, then one per step
    start = torch.randn(z0.shape, generator=gen).double()
    for i, (t, z) in enumerate(seen):
        noise = torch.randn(z0.shape, generator=gen).double()
        noised_normal = acp[t].sqrt() * z0 + (1 - acp[t]).sqrt() * noise
        torch.testing.assert_close(z.double()[outside], noised_normal[outside], atol=1e-5, rtol=1e-5)
        if i == 0:  # inside the box the sampler starts from pure noise
            torch.testing.assert_close(z.double()[inside], start[inside], atol=1e-6, rtol=1e-6)
        else:  # and generates there: not the noised normal
            assert (z.double()[inside] - noised_normal[inside]).abs().mean() > 1e-2


def disk_image(radius: int, bright_product: bool) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[:256, :256]
    disk = (yy - 128) ** 2 + (xx - 128) ** 2 <= radius**2
    product, background = (220, 40) if bright_product else (40, 220)
    image = np.where(disk[..., None], product, background).astype(np.uint8).repeat(3, axis=2)
    return image, disk


@pytest.mark.parametrize("bright_product", [True, False])
def test_boxes_meet_size_ranges_rotation_and_the_foreground_rule(bright_product):
    image, disk = disk_image(90, bright_product)
    foreground = product_foreground(image)
    assert (foreground & disk).sum() / (foreground | disk).sum() > 0.97  # the inverted case finds the disk too
    limits = RANGES["bottle/broken_large"]  # w 0.20-0.25, h 0.25-0.8 of 256
    rng = np.random.default_rng(0)
    angles = set()
    for _ in range(30):
        box = sample_box(foreground, limits, rotate=True, rng=rng)
        assert box is not None
        assert int(0.20 * 256) <= box.width <= int(0.25 * 256) and int(0.25 * 256) <= box.height <= int(0.8 * 256)
        area = box.width * box.height
        assert (box.mask & foreground).sum() > 0.75 * area
        assert abs(int(box.mask.sum()) - area) <= 0.1 * area  # the mask is that rectangle ...
        contours, _ = cv2.findContours(box.mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        (_, _), (w, h), _ = cv2.minAreaRect(max(contours, key=cv2.contourArea))
        assert sorted((w, h)) == pytest.approx(sorted((box.width, box.height)), abs=3)  # ... rotated, not sheared
        angles.add(box.angle % 90)
    assert len(angles) > 5
    straight = sample_box(foreground, limits, rotate=False, rng=rng)
    ys, xs = np.nonzero(straight.mask)
    assert straight.angle == 0 and (np.ptp(xs) + 1, np.ptp(ys) + 1) == (straight.width, straight.height)
    # a product too small for the type's boxes: the rule rejects every draw
    small = product_foreground(disk_image(12, bright_product)[0])
    assert sample_box(small, RANGES["cable/missing_cable"], rotate=True, rng=rng, max_tries=200) is None


def test_pairs_are_tagged_box_and_equal_the_normal_image_outside(brick, fitted, tmp_path):
    m = method()
    samples = list(m.generate(brick, GenerationRequest("crack", 3, 0, fit_dir=fitted)))
    assert len(samples) == 3 and all(s.mask_kind == "box" and s.mask.any() for s in samples)
    for s in samples:
        normal = load_rgb(brick.root / s.source_normal)
        assert np.array_equal(s.image[~s.mask], normal[~s.mask])
    write_synthetic_set(tmp_path / "set", samples, "brick", "anogen", 0)
    with (tmp_path / "set" / "index.csv").open(newline="") as fh:
        assert [row["mask_kind"] for row in csv.DictReader(fh)] == ["box"] * 3
    assert SyntheticSet(tmp_path / "set").mask_kinds == {"box"}
    # an index written before the column existed reads as pixel masks
    rows = (tmp_path / "set" / "index.csv").read_text().splitlines()
    (tmp_path / "set" / "index.csv").write_text("\n".join(line.rsplit(",", 1)[0] for line in rows) + "\n")
    assert SyntheticSet(tmp_path / "set").mask_kinds == {"pixel"}
    # a finished fit is not trained again
    again = method()
    again.fit([brick], fitted, seed=0)
    assert again.losses == {}


def test_composite_none_keeps_anogens_whole_decoded_image(brick, fitted):
    pasted = next(iter(method().generate(brick, GenerationRequest("stain", 1, 0, fit_dir=fitted))))
    whole = next(iter(method(composite="none").generate(brick, GenerationRequest("stain", 1, 0, fit_dir=fitted))))
    assert np.array_equal(pasted.mask, whole.mask) and pasted.source_normal == whole.source_normal
    normal = load_rgb(brick.root / whole.source_normal)
    assert not np.array_equal(whole.image[~whole.mask], normal[~whole.mask])  # the VAE's reconstruction outside


def test_tight_masks_are_pixel_masks_inside_the_box(brick, fitted):
    samples = list(method(mask="tight", tight_threshold=0.02).generate(
        brick, GenerationRequest("hole", 2, 0, fit_dir=fitted)))
    boxes = list(method().generate(brick, GenerationRequest("hole", 2, 0, fit_dir=fitted)))
    assert any(s.mask_kind == "pixel" for s in samples)
    for tight, box in zip(samples, boxes, strict=True):
        assert np.array_equal(tight.image, box.image)  # same seed: same boxes and pixels, only the mask differs
        if tight.mask_kind == "box":  # nothing changed enough: the box is kept, and says so
            assert np.array_equal(tight.mask, box.mask)
            continue
        assert tight.mask_kind == "pixel" and tight.mask.any() and not (tight.mask & ~box.mask).any()
        normal = load_rgb(brick.root / tight.source_normal).astype(float)
        change = np.abs(tight.image - normal).mean(axis=2) / 255
        assert (change[tight.mask] > 0.02).all() and (change[box.mask & ~tight.mask] <= 0.02).all()


def test_released_embeddings_round_trip_and_bad_files(brick, tmp_path):
    base = tiny_base()
    keys = [f"brick/{t}" for t in sorted(brick.synthesis)]
    table = new_table(base, keys)
    with torch.no_grad():
        table.vectors.copy_(torch.randn_like(table.vectors))
    export_released(table, tmp_path / "logs", token_id=base.tokenizer.convert_tokens_to_ids(PLACEHOLDER))
    back = import_released(tmp_path / "logs", keys, base.hidden_size)
    assert torch.equal(back.vectors, table.vectors.detach())
    # AnoGen's own layout: a plain dict of tensors also reads
    plain = tmp_path / "plain" / "brick_crack" / "embeddings.pt"
    plain.parent.mkdir(parents=True)
    torch.save({"string_to_token": {"*": torch.tensor(5)}, "string_to_param": {"*": torch.ones(1, 32)}}, plain)
    assert torch.equal(import_released(plain.parents[1], ["brick/crack"], 32).vectors, torch.ones(1, 1, 32))
    # the plugin's fit imports them instead of training
    m = method(embeddings_path=str(tmp_path / "logs"))
    m.check()
    m.fit([brick], tmp_path / "fit", seed=0)
    fitted = m._load(tmp_path / "fit", "cpu")
    assert m.losses == {} and fitted.meta["embeddings"] == "released"
    for i, key in enumerate(keys):
        assert torch.equal(fitted.vectors[key], table.vectors[i].detach())
    # mistakes: one line naming the file or folder
    with pytest.raises(UserError, match="no embeddings.pt for brick_stain"):
        import_released(plain.parents[1], ["brick/crack", "brick/stain"], 32)
    with pytest.raises(UserError, match="32-d.*1280-d|a 32-d vector"):
        import_released(tmp_path / "logs", keys, 1280)
    evil = tmp_path / "evil" / "brick_crack" / "embeddings.pt"
    evil.parent.mkdir(parents=True)
    evil.write_bytes(pickle.dumps(TokenTable))  # a pickle naming a class: refused by the safe loader
    with pytest.raises(UserError, match="loads safely"):
        import_released(evil.parents[1], ["brick/crack"], 32)
    with pytest.raises(UserError, match="options.embeddings_path"):
        method(embeddings_path=str(tmp_path / "nowhere")).check()


def test_required_weights_name_the_base_and_the_released_files(tmp_path):
    cls = registry.load("methods", "anogen")
    names = [w.name for w in cls({"embeddings_path": str(tmp_path)}).required_weights()]
    assert names == ["CompVis/ldm-text2im-large-256", "anogen-embeddings"]
    assert cls(TINY).required_weights() == []


def test_rows_on_box_masks_are_marked_in_pixel_metric_tables(brick, fitted, tmp_path):
    from types import SimpleNamespace

    from report_helpers import results_frame

    from acbench.engine.stages import _weights_flag
    from acbench.report.formats import BOX_NOTE, metric_grid, to_latex, to_markdown
    from acbench.report.load import prepare
    from acbench.report.tables import build_tables, table_frame

    # the downstream rows of a box-mask synthetic set carry the flag ...
    write_synthetic_set(tmp_path / "gen", method().generate(brick, GenerationRequest("crack", 1, 0, fit_dir=fitted)),
                        "brick", "anogen", 0)
    store = SimpleNamespace(path=lambda dep: tmp_path / dep)
    assert _weights_flag(None, store, SimpleNamespace(deps=("gen",))) == {"synthetic_masks": "box"}
    # ... and the report marks that method in pixel-metric tables only
    frame = results_frame()
    frame["synthetic_masks"] = np.where(frame["method"] == "crop-paste", "box", "")
    tables = {t.metric: t for t in build_tables(prepare(frame))}
    assert tables["pixel_ap"].boxes == {"crop-paste"} and tables["fid"].boxes == set()
    grid = metric_grid(tables["pixel_ap"])
    assert "crop-paste ‡" in grid.header and BOX_NOTE in grid.notes
    assert BOX_NOTE in to_markdown(grid) and r"\ddag" in to_latex(grid)
    assert "‡" not in " ".join(metric_grid(tables["fid"]).header)
    csv_rows = table_frame(tables["pixel_ap"])
    assert set(csv_rows.loc[csv_rows["box_masks"], "method"]) == {"crop-paste"}


def test_range_table_lookup_and_overrides():
    from pydantic import ValidationError

    from acbench_methods.anogen import AnoGenOptions
    from acbench_methods.anogen.boxes import DEFAULT_RANGE, box_range

    assert len(RANGES) == 68  # AnoGen's MVTec AD table: every type but screw's five
    assert box_range("cable", "missing_cable") == (((0.4, 0.4), (0.4, 0.4), False), True)
    assert box_range("screw", "thread_top") == (DEFAULT_RANGE, False)
    mine = ((0.3, 0.5), (0.1, 0.2), False)
    assert box_range("cable", "missing_cable", {"cable/missing_cable": mine}) == (mine, True)
    with pytest.raises(ValidationError, match="0 < low <= high <= 1"):
        AnoGenOptions(ranges={"cable/missing_cable": ((0.5, 0.3), (0.1, 0.2), False)})
