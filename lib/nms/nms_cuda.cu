// CUDA kernels of posenet::nms and posenet::batched_nms.
//
// Greedy NMS in three kernels, all on the current stream of the boxes' device:
//   1. gather: boxes in score order (stable descending sort, as torchvision), their areas,
//      their classes (batched), and a flag for non-finite boxes or scores;
//   2. mask: for every pair i < j of sorted boxes, bit j of row i says "i suppresses j"
//      (IoU > threshold, and same class for batched_nms), 64 columns per word;
//   3. reduce: one thread block walks the mask in score order, 64 boxes at a time, and writes
//      the kept sorted positions and their count, so the mask never leaves the GPU.
// The host reads back two numbers (count and the non-finite flag): one synchronisation.
//
// The IoU arithmetic is the CPU kernel's, written with explicitly rounded intrinsics
// (__fmul_rn, ...) so that no FMA contraction can change a rounding: the CPU and CUDA ops
// return identical indices. fp16/bf16 boxes are computed in fp32, fp64 in fp64.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "nms.h"

namespace posenet {
namespace ops {
namespace {

using Word = unsigned long long;
constexpr int kWordBits = 64;      // boxes per mask word, and threads of the mask kernel
constexpr int kReduceThreads = 256;
constexpr int64_t kMaxSharedWords = 4096;  // 32 KiB of shared memory for the reduce state

enum NonFinite : int64_t { kBoxesNonFinite = 1, kScoresNonFinite = 2 };

__device__ __forceinline__ float add_rn(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ float sub_rn(float a, float b) { return __fsub_rn(a, b); }
__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ float div_rn(float a, float b) { return __fdiv_rn(a, b); }
__device__ __forceinline__ double add_rn(double a, double b) { return __dadd_rn(a, b); }
__device__ __forceinline__ double sub_rn(double a, double b) { return __dsub_rn(a, b); }
__device__ __forceinline__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ double div_rn(double a, double b) { return __ddiv_rn(a, b); }

int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

template <typename T, typename S>
__global__ void gather_kernel(
    int64_t n,
    const int64_t* __restrict__ order,
    const T* __restrict__ boxes,
    const S* __restrict__ scores,
    const int64_t* __restrict__ idxs,  // nullptr for plain nms
    T* __restrict__ sorted,            // n x 4
    T* __restrict__ area,              // n
    int64_t* __restrict__ cls,         // n, or nullptr
    int64_t* __restrict__ flags) {     // [count, non-finite bits]
  const int64_t p = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (p >= n) return;
  const int64_t i = order[p];
  const T x1 = boxes[4 * i + 0], y1 = boxes[4 * i + 1];
  const T x2 = boxes[4 * i + 2], y2 = boxes[4 * i + 3];
  int64_t bad = 0;
  if (!(isfinite(x1) && isfinite(y1) && isfinite(x2) && isfinite(y2))) bad |= kBoxesNonFinite;
  if (!isfinite(scores[i])) bad |= kScoresNonFinite;
  if (bad) atomicOr(reinterpret_cast<Word*>(flags + 1), static_cast<Word>(bad));
  sorted[4 * p + 0] = x1;
  sorted[4 * p + 1] = y1;
  sorted[4 * p + 2] = x2;
  sorted[4 * p + 3] = y2;
  area[p] = mul_rn(sub_rn(x2, x1), sub_rn(y2, y1));
  if (cls != nullptr) cls[p] = idxs[i];
}

// Block (row, col) compares sorted boxes row*64.. against col*64..; only col >= row matters.
template <typename T, bool kBatched>
__global__ void mask_kernel(
    int64_t n,
    int64_t col_blocks,
    const T* __restrict__ sorted,
    const T* __restrict__ area,
    const int64_t* __restrict__ cls,
    T thr,
    Word* __restrict__ mask) {
  const int64_t row = blockIdx.y;
  const int64_t col = blockIdx.x;
  if (row > col) return;
  const int row_size = static_cast<int>(min(n - row * kWordBits, int64_t(kWordBits)));
  const int col_size = static_cast<int>(min(n - col * kWordBits, int64_t(kWordBits)));

  __shared__ T sx1[kWordBits], sy1[kWordBits], sx2[kWordBits], sy2[kWordBits], sa[kWordBits];
  __shared__ int64_t sc[kWordBits];
  const int t = threadIdx.x;
  if (t < col_size) {
    const int64_t j = col * kWordBits + t;
    sx1[t] = sorted[4 * j + 0];
    sy1[t] = sorted[4 * j + 1];
    sx2[t] = sorted[4 * j + 2];
    sy2[t] = sorted[4 * j + 3];
    sa[t] = area[j];
    if (kBatched) sc[t] = cls[j];
  }
  __syncthreads();
  if (t >= row_size) return;

  const int64_t i = row * kWordBits + t;
  const T ix1 = sorted[4 * i + 0], iy1 = sorted[4 * i + 1];
  const T ix2 = sorted[4 * i + 2], iy2 = sorted[4 * i + 3];
  const T ia = area[i];
  const int64_t ic = kBatched ? cls[i] : 0;
  Word bits = 0;
  for (int k = (row == col) ? t + 1 : 0; k < col_size; ++k) {
    if (kBatched && sc[k] != ic) continue;
    const T xx1 = ix1 < sx1[k] ? sx1[k] : ix1;
    const T yy1 = iy1 < sy1[k] ? sy1[k] : iy1;
    const T xx2 = sx2[k] < ix2 ? sx2[k] : ix2;
    const T yy2 = sy2[k] < iy2 ? sy2[k] : iy2;
    T w = sub_rn(xx2, xx1);
    T h = sub_rn(yy2, yy1);
    w = w > T(0) ? w : T(0);
    h = h > T(0) ? h : T(0);
    const T inter = mul_rn(w, h);
    const T ovr = div_rn(inter, sub_rn(add_rn(ia, sa[k]), inter));
    if (ovr > thr) bits |= Word(1) << k;
  }
  mask[i * col_blocks + col] = bits;
}

// Greedy pass over the mask in one thread block. For each group of 64 sorted boxes, every
// thread resolves the group identically from its diagonal words (broadcast reads of shared
// memory), then the threads OR the kept rows into the later groups' "removed" words in
// parallel (coalesced reads of the mask rows). Each removed[j] has one writer per group, and
// the __syncthreads() between groups orders those writes before the next group reads them.
__global__ void reduce_kernel(
    const Word* __restrict__ mask,
    int64_t n,
    int64_t col_blocks,
    Word* __restrict__ removed_global,  // col_blocks words, or nullptr to use shared memory
    int64_t* __restrict__ keep,          // kept sorted positions, in order
    int64_t* __restrict__ flags) {       // flags[0] = number kept
  extern __shared__ Word removed_shared[];
  __shared__ Word diag[kWordBits];
  Word* removed = removed_global != nullptr ? removed_global : removed_shared;
  const int t = threadIdx.x;
  for (int64_t j = t; j < col_blocks; j += blockDim.x) removed[j] = 0;

  int64_t count = 0;
  for (int64_t nb = 0; nb < col_blocks; ++nb) {
    const int64_t base = nb * kWordBits;
    const int rows = static_cast<int>(min(n - base, int64_t(kWordBits)));
    __syncthreads();  // previous group's writes to removed[] are visible, diag is free
    if (t < rows) diag[t] = mask[(base + t) * col_blocks + nb];
    __syncthreads();

    // Visit only the boxes still standing: one step per kept box, not one per box.
    const Word valid = rows == kWordBits ? ~Word(0) : ((Word(1) << rows) - 1);
    Word word = removed[nb];
    Word kept = 0;
    Word standing = ~word & valid;
    while (standing != 0) {
      const int b = __ffsll(static_cast<long long>(standing)) - 1;
      kept |= Word(1) << b;
      word |= diag[b];                                 // diag[b] only has bits above b
      standing = ~word & valid & ~((Word(2) << b) - 1);  // b == 63: (2 << 63) - 1 is all ones
    }
    if (t < rows && ((kept >> t) & 1)) {
      const Word below = t == 0 ? Word(0) : (kept & ((Word(1) << t) - 1));
      keep[count + __popcll(below)] = base + t;
    }
    count += __popcll(kept);

    for (int64_t j = nb + 1 + t; j < col_blocks; j += blockDim.x) {
      Word acc = 0;
      for (Word k = kept; k != 0; k &= k - 1) {
        const int b = __ffsll(static_cast<long long>(k)) - 1;
        acc |= mask[(base + b) * col_blocks + j];
      }
      removed[j] |= acc;
    }
  }
  if (t == 0) flags[0] = count;
}

at::Tensor nms_cuda_impl(
    const at::Tensor& boxes,
    const at::Tensor& scores,
    const at::Tensor* idxs,
    double iou_threshold) {
  detail::check_inputs(boxes, scores, idxs, iou_threshold);
  TORCH_CHECK_VALUE(boxes.is_cuda(), "nms: expected CUDA tensors, got ", boxes.device());
  c10::cuda::CUDAGuard device_guard(boxes.device());
  const int64_t n = boxes.size(0);
  if (n == 0) return at::empty({0}, boxes.options().dtype(at::kLong));
  const int64_t col_blocks = ceil_div(n, kWordBits);
  TORCH_CHECK_VALUE(col_blocks <= 65535, "nms: at most ", 65535 * kWordBits,
                    " boxes are supported on CUDA, got ", n);

  at::Tensor s = scores;
  if (s.scalar_type() != at::kFloat && s.scalar_type() != at::kDouble) s = s.to(at::kFloat);
  s = s.contiguous();
  const at::Tensor order =
      std::get<1>(s.sort(/*stable=*/true, /*dim=*/0, /*descending=*/true)).contiguous();
  const at::Tensor b = boxes.to(detail::compute_dtype(boxes)).contiguous();
  const at::Tensor cls_in = idxs != nullptr ? idxs->to(at::kLong).contiguous() : at::Tensor();

  const auto long_opts = boxes.options().dtype(at::kLong);
  at::Tensor sorted = at::empty({n, 4}, b.options());
  at::Tensor area = at::empty({n}, b.options());
  at::Tensor cls = idxs != nullptr ? at::empty({n}, long_opts) : at::Tensor();
  at::Tensor flags = at::zeros({2}, long_opts);
  at::Tensor mask = at::empty({n * col_blocks}, long_opts);
  at::Tensor keep_pos = at::empty({n}, long_opts);
  const bool shared_state = col_blocks <= kMaxSharedWords;
  at::Tensor removed = shared_state ? at::Tensor() : at::empty({col_blocks}, long_opts);
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();

  AT_DISPATCH_FLOATING_TYPES(b.scalar_type(), "posenet_nms_cuda", [&] {
    using T = scalar_t;
    AT_DISPATCH_FLOATING_TYPES(s.scalar_type(), "posenet_nms_cuda_scores", [&] {
      using S = scalar_t;
      constexpr int threads = 256;
      gather_kernel<T, S><<<static_cast<unsigned>(ceil_div(n, threads)), threads, 0, stream>>>(
          n, order.data_ptr<int64_t>(), b.data_ptr<T>(), s.data_ptr<S>(),
          idxs != nullptr ? cls_in.data_ptr<int64_t>() : nullptr, sorted.data_ptr<T>(),
          area.data_ptr<T>(), idxs != nullptr ? cls.data_ptr<int64_t>() : nullptr,
          flags.data_ptr<int64_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
    const dim3 grid(static_cast<unsigned>(col_blocks), static_cast<unsigned>(col_blocks));
    const T thr = detail::threshold_as<T>(iou_threshold);
    Word* mask_ptr = reinterpret_cast<Word*>(mask.data_ptr<int64_t>());
    if (idxs != nullptr) {
      mask_kernel<T, true><<<grid, kWordBits, 0, stream>>>(
          n, col_blocks, sorted.data_ptr<T>(), area.data_ptr<T>(), cls.data_ptr<int64_t>(), thr,
          mask_ptr);
    } else {
      mask_kernel<T, false><<<grid, kWordBits, 0, stream>>>(
          n, col_blocks, sorted.data_ptr<T>(), area.data_ptr<T>(), nullptr, thr, mask_ptr);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });

  const size_t shared_bytes = shared_state ? sizeof(Word) * static_cast<size_t>(col_blocks) : 0;
  reduce_kernel<<<1, kReduceThreads, shared_bytes, stream>>>(
      reinterpret_cast<const Word*>(mask.data_ptr<int64_t>()), n, col_blocks,
      shared_state ? nullptr : reinterpret_cast<Word*>(removed.data_ptr<int64_t>()),
      keep_pos.data_ptr<int64_t>(), flags.data_ptr<int64_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();

  const at::Tensor host = flags.to(at::kCPU);  // waits for the kernels
  const int64_t count = host.data_ptr<int64_t>()[0];
  const int64_t bad = host.data_ptr<int64_t>()[1];
  if (bad & kBoxesNonFinite) detail::throw_non_finite("boxes");
  if (bad & kScoresNonFinite) detail::throw_non_finite("scores");
  return order.index_select(0, keep_pos.narrow(0, 0, count));
}

at::Tensor nms_cuda(const at::Tensor& boxes, const at::Tensor& scores, double iou_threshold) {
  return nms_cuda_impl(boxes, scores, nullptr, iou_threshold);
}

at::Tensor batched_nms_cuda(
    const at::Tensor& boxes,
    const at::Tensor& scores,
    const at::Tensor& idxs,
    double iou_threshold) {
  return nms_cuda_impl(boxes, scores, &idxs, iou_threshold);
}

}  // namespace

TORCH_LIBRARY_IMPL(posenet, CUDA, m) {
  m.impl("nms", TORCH_FN(nms_cuda));
  m.impl("batched_nms", TORCH_FN(batched_nms_cuda));
}

}  // namespace ops
}  // namespace posenet
