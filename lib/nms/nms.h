// Greedy non-maximum suppression for posenet: shared declarations and input checks.
//
// Semantics follow torchvision.ops.nms: boxes are (x1, y1, x2, y2); scores are taken in
// decreasing order by a stable sort (as torchvision does since 0.12: tied scores in index
// order, so ties resolve identically); IoU = inter / (area_i + area_j - inter) computed in the box dtype;
// a box is suppressed when IoU > iou_threshold. Reduced-precision boxes (fp16, bf16) are
// computed in fp32, float64 boxes in fp64.
#pragma once

#include <ATen/ATen.h>

#include <cmath>
#include <limits>

namespace posenet {
namespace ops {

// The instruction set the CPU kernel's inner loop runs in: "avx512", "avx2" or "baseline".
const char* cpu_isa();

at::Tensor nms_cpu(const at::Tensor& boxes, const at::Tensor& scores, double iou_threshold);
at::Tensor batched_nms_cpu(
    const at::Tensor& boxes,
    const at::Tensor& scores,
    const at::Tensor& idxs,
    double iou_threshold);

namespace detail {

inline const char* dtype_name(const at::Tensor& t) {
  return c10::toString(t.scalar_type());
}

// Checks everything that does not need to read the tensors' data. Non-finite values are
// found by the kernels while they read the data.
inline void check_inputs(
    const at::Tensor& boxes,
    const at::Tensor& scores,
    const at::Tensor* idxs,
    double iou_threshold) {
  TORCH_CHECK_VALUE(
      boxes.dim() == 2 && boxes.size(1) == 4,
      "nms: boxes must have shape (N, 4), got ", boxes.sizes());
  TORCH_CHECK_VALUE(
      scores.dim() == 1, "nms: scores must have shape (N,), got ", scores.sizes());
  TORCH_CHECK_VALUE(
      boxes.size(0) == scores.size(0),
      "nms: boxes and scores must have the same length, got ", boxes.size(0), " and ",
      scores.size(0));
  TORCH_CHECK_TYPE(
      at::isFloatingType(boxes.scalar_type()),
      "nms: boxes must be a floating-point tensor, got ", dtype_name(boxes));
  TORCH_CHECK_TYPE(
      at::isFloatingType(scores.scalar_type()),
      "nms: scores must be a floating-point tensor, got ", dtype_name(scores));
  TORCH_CHECK_VALUE(
      boxes.device() == scores.device(),
      "nms: boxes and scores must be on the same device, got ", boxes.device(), " and ",
      scores.device());
  TORCH_CHECK_VALUE(
      std::isfinite(iou_threshold), "nms: iou_threshold must be finite, got ", iou_threshold);
  if (idxs != nullptr) {
    TORCH_CHECK_VALUE(
        idxs->dim() == 1, "batched_nms: idxs must have shape (N,), got ", idxs->sizes());
    TORCH_CHECK_VALUE(
        idxs->size(0) == boxes.size(0),
        "batched_nms: boxes and idxs must have the same length, got ", boxes.size(0),
        " and ", idxs->size(0));
    TORCH_CHECK_TYPE(
        at::isIntegralType(idxs->scalar_type(), /*includeBool=*/false),
        "batched_nms: idxs must be an integer tensor, got ", dtype_name(*idxs));
    TORCH_CHECK_VALUE(
        idxs->device() == boxes.device(),
        "batched_nms: boxes and idxs must be on the same device, got ", boxes.device(),
        " and ", idxs->device());
  }
}

// The dtype the IoU is computed in: fp64 stays fp64, everything else runs in fp32.
inline at::ScalarType compute_dtype(const at::Tensor& boxes) {
  return boxes.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

// torchvision compares the scalar_t IoU against the double threshold after promoting the IoU
// to double. For a float IoU `ovr`, (double)ovr > thr holds exactly when ovr > t where t is
// the largest float not above thr, so the comparison can stay in float (and in SIMD lanes).
template <typename T>
inline T threshold_as(double thr) {
  T t = static_cast<T>(thr);
  if (static_cast<double>(t) > thr) {
    t = std::nextafter(t, -std::numeric_limits<T>::infinity());
  }
  return t;
}

[[noreturn]] inline void throw_non_finite(const char* what) {
  TORCH_CHECK_VALUE(false, "nms: ", what, " contain NaN or infinite values");
  abort();  // unreachable
}

}  // namespace detail
}  // namespace ops
}  // namespace posenet
