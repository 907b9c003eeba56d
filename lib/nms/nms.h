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

// The instruction set the CPU kernels' inner loops (NMS, peak cells) run in: "avx512", "avx2" or
// "baseline".
const char* cpu_isa();
// Run the inner loop in `name` from now on; false (and no change) if the name is unknown or
// the CPU lacks that instruction set.
bool set_cpu_isa(const char* name);
// The widest instruction set this CPU offers the kernel.
const char* widest_cpu_isa();

at::Tensor nms_cpu(const at::Tensor& boxes, const at::Tensor& scores, double iou_threshold);
at::Tensor batched_nms_cpu(
    const at::Tensor& boxes,
    const at::Tensor& scores,
    const at::Tensor& idxs,
    double iou_threshold);

namespace detail {

// Checks everything that does not need to read the tensors' data; non-finite values are found
// by the kernels while they read the data. Defined once, in nms.cpp (compiled by the host
// compiler only), so that the CPU and CUDA translation units share one copy of the checks and
// of the error-message code instead of an inline copy each.
void check_inputs(
    const at::Tensor& boxes,
    const at::Tensor& scores,
    const at::Tensor* idxs,
    double iou_threshold);

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

// Throws the ValueError "nms: <what> contain NaN or infinite values" (defined in nms.cpp).
[[noreturn]] void throw_non_finite(const char* what);

}  // namespace detail
}  // namespace ops
}  // namespace posenet
