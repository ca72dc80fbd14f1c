#!/usr/bin/env bash
# The benchmark suite behind docs/BENCHMARKS.md: ViT-b vs ClustViT-b (Segmenter and UPerNet, k3/ip3 and
# k4/ip4) on the SUIM and ADE20K samples with oracle clusters, batch 1 and 8, fp32 and bf16, plus cost
# against resolution, ours against the official implementation itself (`clustvit bench official`, when
# OFFICIAL_SRC names an official checkout), our CPU path against eager PyTorch, torch.compile,
# onnxruntime and OpenVINO (`clustvit bench backends`), what each accelerated kernel and bf16 buy, and
# the kernel rates (`clustvit bench kernels`). Every A/B row is one `clustvit bench compare` run (both
# models in one process, alternating). `clustvit bench report OUT_DIR` makes the tables.
#
#   [OFFICIAL_SRC=DIR [OFFICIAL_PY=PY]] tools/run_benchmarks.sh DEVICE OUT_DIR SUIM_ROOT ADE_ROOT [REPEATS] [THREADS] [QUICK]
#   e.g. OFFICIAL_SRC=/tmp/official-env/src tools/run_benchmarks.sh cpu bench_out data/suim data/ade/ADEChallengeData2016 7 2
# SUIM_ROOT must hold converted masks (tools/suim_mask_convert.py). QUICK=1 runs the Segmenter k3/ip3 rows
# and the official comparison only. OFFICIAL_SRC: an official ClustViT checkout with its environment
# (bash ../shared/peers/clustvit-official/setup.sh DIR builds DIR/src and DIR/venv); OFFICIAL_PY defaults
# to DIR/../venv/bin/python.
set -euo pipefail
CLUSTVIT=(python3 -m clustvit)  # works in a checkout without `pip install` too (run from its root)
DEVICE=$1; OUT=$2; SUIM=$3; ADE=$4; REPEATS=${5:-7}; THREADS=${6:-0}; QUICK=${7:-0}
mkdir -p "$OUT"
S=config/clustvit/others; V=config/vit
THR=(); [ "$THREADS" != 0 ] && THR=(--threads "$THREADS")
bench() {  # name, config A, config B, extra args...
  local name=$1 a=$2 b=$3; shift 3
  echo "### $name: $*" | tee -a "$OUT/summary.txt"
  "${CLUSTVIT[@]}" bench compare "$a" "$b" --oracle-clusters --device "$DEVICE" --repeats "$REPEATS" "${THR[@]}" \
    --work-dir "$OUT/$name" "$@" 2>&1 | tee "$OUT/$name.log" | tail -n 5 | tee -a "$OUT/summary.txt"
}
SUIM_ARGS=(--data-root "$SUIM" --split test)
if [ "$DEVICE" = cpu ]; then  # CPU kernel rates (GEMM MKL vs oneDNN, attention)
  "${CLUSTVIT[@]}" bench kernels "${THR[@]}" --work-dir "$OUT/kernels" 2>&1 | tee "$OUT/kernels.log"
fi
for bs in 1 8; do
  for amp in fp32 bf16; do
    AMP=(); [ $amp = bf16 ] && AMP=(--amp)
    bench "seg_k3ip3_suim_b${bs}_$amp" $V/segmenter_vit-b_mask_1xb8-80k_suim-512x512.py \
      $S/segmenter_clustvit-b_mask_1xb8-80k_suim-512x512_k3_ip3.py "${SUIM_ARGS[@]}" --batch-size $bs "${AMP[@]}"
    [ "$QUICK" = 1 ] && continue
    bench "seg_k4ip4_suim_b${bs}_$amp" $V/segmenter_vit-b_mask_1xb8-80k_suim-512x512.py \
      $S/segmenter_clustvit-b_mask_1xb8-80k_suim-512x512_k4_ip4.py "${SUIM_ARGS[@]}" --batch-size $bs "${AMP[@]}"
    bench "upn_k3ip3_suim_b${bs}_$amp" $V/upernet_vit-b_1xb8-80k_suim-512x512.py \
      $S/upernet_clustvit-b_1xb8-80k_suim-512x512_k3_ip3.py "${SUIM_ARGS[@]}" --batch-size $bs "${AMP[@]}"
    bench "upn_k4ip4_suim_b${bs}_$amp" $V/upernet_vit-b_1xb8-80k_suim-512x512.py \
      $S/upernet_clustvit-b_1xb8-80k_suim-512x512_k4_ip4.py "${SUIM_ARGS[@]}" --batch-size $bs "${AMP[@]}"
  done
done
bench clustvit_b1_vs_b8 $S/segmenter_clustvit-b_mask_1xb8-80k_suim-512x512_k3_ip3.py \
  $S/segmenter_clustvit-b_mask_1xb8-80k_suim-512x512_k3_ip3.py "${SUIM_ARGS[@]}" --batch-size 1 --batch-size-b 8
# Ours against the official implementation itself: same images, weights, threads and malloc settings, one run
if [ -n "${OFFICIAL_SRC:-}" ] && [ "$DEVICE" = cpu ]; then
  OPY=(); [ -n "${OFFICIAL_PY:-}" ] && OPY=(--official-python "$OFFICIAL_PY")
  for bs in 1 8; do
    echo "### official_b$bs" | tee -a "$OUT/summary.txt"
    "${CLUSTVIT[@]}" bench official --official-src "$OFFICIAL_SRC" "${OPY[@]}" "${SUIM_ARGS[@]}" --oracle-clusters \
      --device cpu --batch-size $bs --repeats "$REPEATS" "${THR[@]}" --work-dir "$OUT/official_b$bs" 2>&1 \
      | tee "$OUT/official_b$bs.log" | tail -n 3 | tee -a "$OUT/summary.txt"
  done
fi
[ "$QUICK" = 1 ] && exit 0
for m in $V/segmenter_vit-b_mask_1xb8-80k_suim-512x512.py $S/segmenter_clustvit-b_mask_1xb8-80k_suim-512x512_k3_ip3.py; do
  name=$(basename "$m" .py | cut -d_ -f2)
  bench "bf16_gain_$name" "$m" "$m" "${SUIM_ARGS[@]}" --amp-b   # B = A under bf16
  if [ "$DEVICE" = cpu ]; then  # what each kernel of clustvit.accel buys over the plain model's, and all of them
    for piece in all onednn_linear head_by_head_attention; do
      bench "plain_${piece}_${name}_fp32" "$m" "$m" "${SUIM_ARGS[@]}" --plain-a $piece
      bench "plain_${piece}_${name}_bf16" "$m" "$m" "${SUIM_ARGS[@]}" --plain-a $piece --amp
    done
  fi
done
bench seg_k3ip3_ade_b1_fp32 $V/segmenter_vit-b_mask_1xb8-160k_ade20k-512x512.py \
  config/clustvit/ade20k/segmenter_clustvit-b_mask_1xb8-160k_ade20k-512x512_k3_ip3.py --data-root "$ADE" --split val
for size in 256 512 768 1024; do
  bench "seg_k3ip3_shape$size" $V/segmenter_vit-b_mask_1xb8-80k_suim-512x512.py \
    $S/segmenter_clustvit-b_mask_1xb8-80k_suim-512x512_k3_ip3.py --shape $size $size --cfg-options model.test_cfg.mode=whole
done
if [ "$DEVICE" = cpu ]; then  # our CPU path against the library paths (eager, torch.compile, onnxruntime, OpenVINO)
  echo "### backends" | tee -a "$OUT/summary.txt"
  "${CLUSTVIT[@]}" bench backends "${SUIM_ARGS[@]}" --oracle-clusters --device cpu --repeats "$REPEATS" "${THR[@]}" \
    --work-dir "$OUT/backends" 2>&1 | tee "$OUT/backends.log" | tail -n 21 | tee -a "$OUT/summary.txt"
fi
