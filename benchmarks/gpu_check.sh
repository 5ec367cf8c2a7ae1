#!/usr/bin/env bash
# The GPU measurements of benchmarks/RESULTS.md ("GPU self-check and speed work"), as one script per part,
# each sized to finish within 10 minutes on one H200 (random full-size networks: speed does not depend on
# weight values). Every benchmark prints one JSON object; they are written to $OUT (default: gpu-results/).
#
#   bash benchmarks/gpu_check.sh selftest     # acbench selftest --device cuda, one line per plugin (~5 min)
#   bash benchmarks/gpu_check.sh speed        # generation (compiled vs eager vs plain diffusers), detector, IC-LPIPS
#   bash benchmarks/gpu_check.sh bf16         # unet-localization with and without bf16 autocast, 3 seeds (~4 min)
#   bash benchmarks/gpu_check.sh ldm          # AnoGen / AnomalyDiffusion sampler, compiled vs eager (full-size LDM)
#   bash benchmarks/gpu_check.sh all          # all four, one after the other
#
# On an offline GPU machine without acbench's dependencies, put the wheels of ../shared/gpu/fetch-wheels.sh
# (or any folder of wheels) in .whl/: they are installed into /tmp/site first.
# DEVICE=cpu with SMALL=1 rehearses the script on a CPU in a few minutes (tiny networks, small sets).
set -uo pipefail
part=${1:-all}
out=${OUT:-gpu-results}
device=${DEVICE:-cuda}
small=${SMALL:-0}
mkdir -p "$out"

if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 3
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
py=${PYTHON:-python3}

# step NAME TIMEOUT_S COMMAND...: stdout to $out/NAME.json, stderr to $out/NAME.log, a summary line here
step() {
  local name=$1 limit=$2
  shift 2
  local start=$SECONDS
  timeout "$limit" "$@" > "$out/$name.json" 2> "$out/$name.log"
  local rc=$?
  echo "$name: exit $rc in $((SECONDS - start)) s"
  tail -n 3 "$out/$name.json" | sed 's/^/    /'
}

if [[ "$device" == cuda* ]]; then
  "$py" -c "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0))" \
    | tee "$out/device.txt"
fi

if [[ $part == selftest || $part == all ]]; then
  step selftest 420 "$py" -m acbench.cli selftest --device "$device"
fi

if [[ $part == speed || $part == all ]]; then
  if [[ $small == 1 ]]; then
    ac=(--model tiny --images 8 --loop-images 2 --steps 4 --repeats 1)
    sd=(--preset tiny --images 8 --steps 4 --repeats 1)
    det=(--option epochs=1 --option samples_per_epoch=16)
    lp=(--generated 40 --size 64)
    backend=(--compile-backend aot_eager)
  else
    ac=(--model sd15-arch --images 64 --loop-images 8 --steps 50 --repeats 2)
    sd=(--preset sd15 --images 32 --repeats 2)
    det=(--option epochs=4)
    lp=(--generated 1000 --size 256)
    backend=()
  fi
  # Issue targets: >= 6.0 images/s, >= 1.6x plain diffusers, >= 10x the per-image loop (compiled arm)
  step anomalycontrol_generate 300 "$py" benchmarks/anomalycontrol_generate.py --device "$device" \
    --batch-size 8 --compile "${backend[@]}" "${ac[@]}"
  step sd_inpaint_generate 240 "$py" benchmarks/sd_inpaint_generate.py --device "$device" --batch-size 8 \
    --compile "${backend[@]}" "${sd[@]}"
  # unet-localization at the paper preset: device-resident batches (default) vs the former host batches
  # (one method, one category: one job each)
  one=(--detector unet-localization --preset paper --method perlin --category grass)
  step detector_device_pool 150 "$py" benchmarks/detector_stage.py --device "$device" "${one[@]}" "${det[@]}"
  step detector_host_batches 150 "$py" benchmarks/detector_stage.py --device "$device" "${one[@]}" "${det[@]}" \
    --option data_on_device=false
  # IC-LPIPS at 1000 generated images per type, both recipes (target: >= 50x the DFMGAN loop, diff <= 1e-5)
  step ic_lpips_dfmgan 240 "$py" benchmarks/ic_lpips.py --device "$device" --batch-size 64 "${lp[@]}"
  step ic_lpips_anomalydiffusion 240 "$py" benchmarks/ic_lpips.py --device "$device" --batch-size 64 \
    --variant anomalydiffusion "${lp[@]}"
fi

if [[ $part == ldm || $part == all ]]; then
  # the sampler AnoGen and AnomalyDiffusion share, padded at the network calls: compiled vs eager batches
  # on the same boxes and noise (speed-up, compile seconds, max abs difference in levels)
  if [[ $small == 1 ]]; then
    ldm=(--model tiny --pairs 5 --batch-size 2 --steps 4 --train-steps 0 --compile-backend aot_eager)
  else
    ldm=(--model ldm-arch --pairs 64 --batch-size 16 --train-steps 0)
  fi
  step anogen_generate 540 "$py" benchmarks/anogen_generate.py --device "$device" --compile "${ldm[@]}"
fi

if [[ $part == bf16 || $part == all ]]; then
  if [[ $small == 1 ]]; then bf=(--preset demo --seeds 0 1); else bf=(--preset paper --option epochs=10); fi
  step detector_bf16 540 "$py" benchmarks/detector_bf16.py --device "$device" "${bf[@]}"
fi
