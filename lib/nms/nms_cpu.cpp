// CPU kernels of posenet::nms and posenet::batched_nms.
//
// Same result as torchvision's CPU kernel (same score order, same IoU arithmetic, same
// comparison), organised for speed:
//   * the score order comes from an exact stable radix sort instead of a comparison sort;
//   * boxes are gathered once into contiguous arrays in score order, with their areas, so the
//     inner loop streams memory instead of indexing through the sort order;
//   * the inner loop has no branches (suppression is a mask update), so the compiler
//     vectorises it; it is compiled for AVX-512 / AVX2 / baseline and picked at run time;
//   * suppressed boxes are dropped from the candidate arrays (lazily, once they are a
//     noticeable fraction), so they are not revisited;
//   * batched_nms runs the greedy pass per class on that class's boxes only: no
//     coordinate-offset trick, whose float rounding can change IoUs.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <string>
#include <vector>

#include "nms.h"

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define POSENET_NMS_X86 1
#if defined(__clang__)
#define POSENET_AVX512_TARGET "avx512f,avx512vl,avx512dq,avx512bw"
#else
#define POSENET_AVX512_TARGET "avx512f,avx512vl,avx512dq,avx512bw,prefer-vector-width=512"
#endif
#endif

#if defined(__GNUC__)
#define POSENET_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define POSENET_ALWAYS_INLINE inline
#endif

namespace posenet {
namespace ops {
namespace {

// Mask lanes as wide as the coordinates, so masks and IoUs share SIMD lanes.
template <typename T>
struct MaskOf;
template <>
struct MaskOf<float> {
  using type = int32_t;
};
template <>
struct MaskOf<double> {
  using type = int64_t;
};

// Candidates in decreasing score order, as structure of arrays.
template <typename T>
struct Candidates {
  using M = typename MaskOf<T>::type;
  explicit Candidates(int64_t n)
      : x1(n), y1(n), x2(n), y2(n), area(n), dead(n, 0), id(n) {}
  std::vector<T> x1, y1, x2, y2, area;
  std::vector<M> dead;     // 1 once suppressed
  std::vector<int64_t> id;  // what to report for a kept candidate
};

// Marks every candidate j in [begin, end) whose IoU with box b exceeds thr (already rounded,
// see detail::threshold_as) and returns how many were newly marked. The arithmetic is
// torchvision's, operation for operation: max/min of the corners, widths clamped at 0,
// inter / (area_b + area_j - inter), compared with '>'. No reassociation or contraction is
// allowed (-ffp-contract=off, no -ffast-math), so every SIMD lane rounds like the scalar code.
template <typename T, typename M>
POSENET_ALWAYS_INLINE M suppress_pass_body(
    const T* __restrict x1,
    const T* __restrict y1,
    const T* __restrict x2,
    const T* __restrict y2,
    const T* __restrict area,
    M* __restrict dead,
    int64_t begin,
    int64_t end,
    T bx1,
    T by1,
    T bx2,
    T by2,
    T barea,
    T thr) {
  M newly = 0;
  for (int64_t j = begin; j < end; ++j) {
    const T xx1 = bx1 < x1[j] ? x1[j] : bx1;
    const T yy1 = by1 < y1[j] ? y1[j] : by1;
    const T xx2 = x2[j] < bx2 ? x2[j] : bx2;
    const T yy2 = y2[j] < by2 ? y2[j] : by2;
    T w = xx2 - xx1;
    T h = yy2 - yy1;
    w = w > T(0) ? w : T(0);
    h = h > T(0) ? h : T(0);
    const T inter = w * h;
    const T ovr = inter / (barea + area[j] - inter);
    const M hit = ovr > thr ? M(1) : M(0);
    const M d = dead[j];
    newly += hit & (d ^ M(1));
    dead[j] = d | hit;
  }
  return newly;
}

template <typename T>
using PassFn = typename MaskOf<T>::type (*)(
    const T*,
    const T*,
    const T*,
    const T*,
    const T*,
    typename MaskOf<T>::type*,
    int64_t,
    int64_t,
    T,
    T,
    T,
    T,
    T,
    T);

#define POSENET_PASS_ARGS                                                                  \
  const T *__restrict x1, const T *__restrict y1, const T *__restrict x2,                  \
      const T *__restrict y2, const T *__restrict area, typename MaskOf<T>::type *__restrict \
      dead,                                                                                \
      int64_t begin, int64_t end, T bx1, T by1, T bx2, T by2, T barea, T thr
#define POSENET_PASS_CALL x1, y1, x2, y2, area, dead, begin, end, bx1, by1, bx2, by2, barea, thr

template <typename T>
typename MaskOf<T>::type pass_baseline(POSENET_PASS_ARGS) {
  return suppress_pass_body<T, typename MaskOf<T>::type>(POSENET_PASS_CALL);
}

#ifdef POSENET_NMS_X86
template <typename T>
__attribute__((target("avx2"))) typename MaskOf<T>::type pass_avx2(POSENET_PASS_ARGS) {
  return suppress_pass_body<T, typename MaskOf<T>::type>(POSENET_PASS_CALL);
}

template <typename T>
__attribute__((target(POSENET_AVX512_TARGET)))
typename MaskOf<T>::type pass_avx512(POSENET_PASS_ARGS) {
  return suppress_pass_body<T, typename MaskOf<T>::type>(POSENET_PASS_CALL);
}
#endif

// Instruction sets of the inner loop, narrowest first.
constexpr const char* kIsaNames[] = {"baseline", "avx2", "avx512"};
constexpr int kIsaCount = 3;

// The widest instruction set the CPU has (an index into kIsaNames).
int widest_isa() {
#ifdef POSENET_NMS_X86
  __builtin_cpu_init();
  const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw");
  if (avx512) return 2;
  if (__builtin_cpu_supports("avx2")) return 1;
#endif
  return 0;
}

int isa_index(const char* name) {
  for (int i = 0; i < kIsaCount; ++i) {
    if (std::strcmp(name, kIsaNames[i]) == 0) return i;
  }
  return -1;
}

// The widest instruction set, or a narrower one that POSENET_NMS_ISA names; set_cpu_isa
// changes it at run time (the tests check every variant on one machine in one process).
std::atomic<int>& isa_slot() {
  static std::atomic<int> slot{[] {
    const char* env = std::getenv("POSENET_NMS_ISA");
    const int widest = widest_isa();
    const int want = env != nullptr ? isa_index(env) : -1;
    return want >= 0 && want < widest ? want : widest;
  }()};
  return slot;
}

template <typename T>
PassFn<T> pass_fn() {
  switch (isa_slot().load(std::memory_order_relaxed)) {
#ifdef POSENET_NMS_X86
    case 2:
      return &pass_avx512<T>;
    case 1:
      return &pass_avx2<T>;
#endif
    default:
      return &pass_baseline<T>;
  }
}

// Greedy NMS over candidates [begin, end) of c, which are in decreasing score order. Calls
// emit(c.id[k]) for each kept candidate, in order. Reorders and overwrites c[begin, end).
template <typename T, typename Emit>
void greedy_nms(Candidates<T>& c, int64_t begin, int64_t end, T thr, Emit&& emit) {
  using M = typename MaskOf<T>::type;
  const PassFn<T> pass = pass_fn<T>();
  T* x1 = c.x1.data();
  T* y1 = c.y1.data();
  T* x2 = c.x2.data();
  T* y2 = c.y2.data();
  T* area = c.area.data();
  M* dead = c.dead.data();
  int64_t* id = c.id.data();

  int64_t m = end;    // candidates live in [s, m)
  int64_t s = begin;  // the best remaining candidate, always alive
  int64_t ndead = 0;  // suppressed entries still inside (s, m)
  while (s < m) {
    emit(id[s]);
    ndead += pass(x1, y1, x2, y2, area, dead, s + 1, m, x1[s], y1[s], x2[s], y2[s], area[s], thr);
    ++s;
    while (s < m && dead[s]) {
      ++s;
      --ndead;
    }
    // Compaction costs a few scalar moves per entry, a dead entry costs one SIMD lane per
    // later pass: drop them once they are an eighth of what is left.
    if (ndead > 0 && ndead * 8 >= m - s) {
      int64_t w = s;
      for (int64_t j = s; j < m; ++j) {
        x1[w] = x1[j];
        y1[w] = y1[j];
        x2[w] = x2[j];
        y2[w] = y2[j];
        area[w] = area[j];
        id[w] = id[j];
        w += dead[j] == 0;
      }
      std::fill(dead + s, dead + w, M(0));
      m = w;
      ndead = 0;
    }
  }
}

// ---------------------------------------------------------------------------------------
// Score order. torchvision sorts with a *stable* descending sort (since 0.12), so the order is
// fully defined: decreasing score, tied scores by increasing index (-0.0 and +0.0 tie). Any
// correct stable sort gives that permutation; an LSD radix sort on the float bits gives it
// several times faster than at::sort for thousands of boxes.

template <typename T>
struct KeyOf;
template <>
struct KeyOf<float> {
  using type = uint32_t;
};
template <>
struct KeyOf<double> {
  using type = uint64_t;
};

// Unsigned key whose increasing order is the decreasing order of the (finite) score.
template <typename T>
inline typename KeyOf<T>::type descending_key(T v) {
  using K = typename KeyOf<T>::type;
  constexpr K sign = K(1) << (8 * sizeof(K) - 1);
  if (v == T(0)) v = T(0);  // -0.0 ties with +0.0
  K u;
  std::memcpy(&u, &v, sizeof(u));
  const K ascending = (u & sign) ? ~u : (u | sign);
  return ~ascending;
}

template <typename T>
void stable_descending_order(const T* v, int64_t n, int64_t* order) {
  using K = typename KeyOf<T>::type;
  std::vector<K> key(n);
  for (int64_t i = 0; i < n; ++i) key[i] = descending_key(v[i]);
  if (n < 256) {
    std::iota(order, order + n, int64_t(0));
    std::sort(order, order + n, [&](int64_t a, int64_t b) {
      return key[a] < key[b] || (key[a] == key[b] && a < b);
    });
    return;
  }
  // LSD radix sort, 11-bit digits; each pass is stable, the input is in index order.
  constexpr int kBits = 11;
  constexpr int kBuckets = 1 << kBits;
  constexpr int kDigits = (8 * sizeof(K) + kBits - 1) / kBits;
  std::vector<uint32_t> hist(size_t(kDigits) * kBuckets, 0);
  for (int64_t i = 0; i < n; ++i) {
    const K k = key[i];
    for (int d = 0; d < kDigits; ++d) hist[size_t(d) * kBuckets + ((k >> (d * kBits)) & (kBuckets - 1))] += 1;
  }
  std::vector<K> key2(n);
  std::vector<uint32_t> idx(n), idx2(n);
  std::iota(idx.begin(), idx.end(), uint32_t(0));
  K* ks = key.data();
  K* kd = key2.data();
  uint32_t* is = idx.data();
  uint32_t* id = idx2.data();
  for (int d = 0; d < kDigits; ++d) {
    uint32_t* h = hist.data() + size_t(d) * kBuckets;
    const int shift = d * kBits;
    if (h[(ks[0] >> shift) & (kBuckets - 1)] == uint32_t(n)) continue;  // digit all equal
    uint32_t sum = 0;
    for (int b = 0; b < kBuckets; ++b) {
      const uint32_t c = h[b];
      h[b] = sum;
      sum += c;
    }
    for (int64_t i = 0; i < n; ++i) {
      const K k = ks[i];
      const uint32_t dst = h[(k >> shift) & (kBuckets - 1)]++;
      kd[dst] = k;
      id[dst] = is[i];
    }
    std::swap(ks, kd);
    std::swap(is, id);
  }
  for (int64_t i = 0; i < n; ++i) order[i] = is[i];
}

// Decreasing-score order of `scores` (checked finite), as torchvision orders them.
std::vector<int64_t> score_order(const at::Tensor& scores) {
  at::Tensor s = scores;
  if (s.scalar_type() != at::kFloat && s.scalar_type() != at::kDouble) {
    s = s.to(at::kFloat);  // exact for fp16/bf16, so the order is unchanged
  }
  s = s.contiguous();
  const int64_t n = s.numel();
  std::vector<int64_t> order(n);
  bool finite = true;
  AT_DISPATCH_FLOATING_TYPES(s.scalar_type(), "posenet_nms_scores", [&] {
    const scalar_t* v = s.data_ptr<scalar_t>();
    for (int64_t i = 0; i < n; ++i) finite &= static_cast<bool>(std::isfinite(v[i]));
    if (!finite) return;
    if (n < (int64_t(1) << 31)) {
      stable_descending_order<scalar_t>(v, n, order.data());
    } else {
      const at::Tensor o = std::get<1>(s.sort(/*stable=*/true, /*dim=*/0, /*descending=*/true));
      std::memcpy(order.data(), o.data_ptr<int64_t>(), sizeof(int64_t) * n);
    }
  });
  if (!finite) detail::throw_non_finite("scores");
  return order;
}

// Copies box order[perm[k]] (or order[k] without perm) into candidate k.
template <typename T>
void gather(
    const at::Tensor& boxes,
    const int64_t* order,
    const int64_t* perm,
    Candidates<T>& c,
    bool report_sorted_position) {
  const at::Tensor b = boxes.to(c10::CppTypeToScalarType<T>::value).contiguous();
  const T* d = b.data_ptr<T>();
  const int64_t n = b.size(0);
  bool finite = true;
  for (int64_t k = 0; k < n; ++k) {
    const int64_t p = perm ? perm[k] : k;
    const int64_t i = order[p];
    const T bx1 = d[4 * i + 0], by1 = d[4 * i + 1], bx2 = d[4 * i + 2], by2 = d[4 * i + 3];
    finite &= std::isfinite(bx1) & std::isfinite(by1) & std::isfinite(bx2) & std::isfinite(by2);
    c.x1[k] = bx1;
    c.y1[k] = by1;
    c.x2[k] = bx2;
    c.y2[k] = by2;
    c.area[k] = (bx2 - bx1) * (by2 - by1);
    c.id[k] = report_sorted_position ? p : i;
  }
  if (!finite) detail::throw_non_finite("boxes");
}

at::Tensor empty_keep(const at::Tensor& boxes) {
  return at::empty({0}, boxes.options().dtype(at::kLong));
}

template <typename T>
at::Tensor nms_impl(const at::Tensor& boxes, const int64_t* order, double iou_threshold) {
  const int64_t n = boxes.size(0);
  Candidates<T> c(n);
  gather<T>(boxes, order, nullptr, c, /*report_sorted_position=*/false);
  at::Tensor keep = at::empty({n}, boxes.options().dtype(at::kLong));
  int64_t* out = keep.data_ptr<int64_t>();
  int64_t nkeep = 0;
  greedy_nms<T>(c, 0, n, detail::threshold_as<T>(iou_threshold), [&](int64_t i) {
    out[nkeep++] = i;
  });
  return keep.narrow(0, 0, nkeep);
}

// Sorted positions 0..n-1 grouped by class (cls[p]), score order kept inside each class.
// Returns the start of each group in perm, plus n at the end.
std::vector<int64_t> group_by_class(const std::vector<int64_t>& cls, std::vector<int64_t>& perm) {
  const int64_t n = static_cast<int64_t>(cls.size());
  const auto [lo_it, hi_it] = std::minmax_element(cls.begin(), cls.end());
  const int64_t lo = *lo_it, hi = *hi_it;
  std::vector<int64_t> starts;
  // Counting sort when the ids span a small range (the usual case), else a stable sort.
  const uint64_t span = static_cast<uint64_t>(hi) - static_cast<uint64_t>(lo);
  if (span <= static_cast<uint64_t>(4 * n + 1024)) {
    std::vector<int64_t> count(span + 2, 0);
    for (int64_t p = 0; p < n; ++p) count[cls[p] - lo + 1] += 1;
    for (uint64_t k = 0; k <= span; ++k) {
      if (count[k + 1] > 0) starts.push_back(count[k]);
      count[k + 1] += count[k];
    }
    for (int64_t p = 0; p < n; ++p) perm[count[cls[p] - lo]++] = p;
  } else {
    std::iota(perm.begin(), perm.end(), int64_t(0));
    std::stable_sort(perm.begin(), perm.end(), [&](int64_t a, int64_t b) {
      return cls[a] < cls[b];
    });
    for (int64_t k = 0; k < n; ++k) {
      if (k == 0 || cls[perm[k]] != cls[perm[k - 1]]) starts.push_back(k);
    }
  }
  starts.push_back(n);
  return starts;
}

template <typename T>
at::Tensor batched_nms_impl(
    const at::Tensor& boxes,
    const int64_t* order,
    const at::Tensor& idxs,
    double iou_threshold) {
  const int64_t n = boxes.size(0);
  const at::Tensor ids = idxs.to(at::kLong).contiguous();
  const int64_t* id_data = ids.data_ptr<int64_t>();
  std::vector<int64_t> cls(n);
  for (int64_t p = 0; p < n; ++p) cls[p] = id_data[order[p]];

  std::vector<int64_t> perm(n);
  const std::vector<int64_t> starts = group_by_class(cls, perm);
  const int64_t ngroups = static_cast<int64_t>(starts.size()) - 1;

  Candidates<T> c(n);
  gather<T>(boxes, order, perm.data(), c, /*report_sorted_position=*/true);
  const T thr = detail::threshold_as<T>(iou_threshold);
  std::vector<uint8_t> kept(n, 0);
  auto run_groups = [&](int64_t g0, int64_t g1) {
    for (int64_t g = g0; g < g1; ++g) {
      greedy_nms<T>(c, starts[g], starts[g + 1], thr, [&](int64_t p) { kept[p] = 1; });
    }
  };
  // Classes are independent; spread them over threads when there is enough work.
  if (ngroups > 1 && n >= 4096) {
    at::parallel_for(0, ngroups, 1, run_groups);
  } else {
    run_groups(0, ngroups);
  }

  at::Tensor keep = at::empty({n}, boxes.options().dtype(at::kLong));
  int64_t* out = keep.data_ptr<int64_t>();
  int64_t nkeep = 0;
  for (int64_t p = 0; p < n; ++p) {
    if (kept[p]) out[nkeep++] = order[p];
  }
  return keep.narrow(0, 0, nkeep);
}

}  // namespace

const char* cpu_isa() {
  return kIsaNames[isa_slot().load(std::memory_order_relaxed)];
}

const char* widest_cpu_isa() {
  return kIsaNames[widest_isa()];
}

bool set_cpu_isa(const char* name) {
  const int want = isa_index(name);
  if (want < 0 || want > widest_isa()) return false;
  isa_slot().store(want, std::memory_order_relaxed);
  return true;
}

at::Tensor nms_cpu(const at::Tensor& boxes, const at::Tensor& scores, double iou_threshold) {
  detail::check_inputs(boxes, scores, nullptr, iou_threshold);
  if (boxes.size(0) == 0) return empty_keep(boxes);
  const std::vector<int64_t> order = score_order(scores);
  at::Tensor keep;
  AT_DISPATCH_FLOATING_TYPES(detail::compute_dtype(boxes), "posenet_nms_cpu", [&] {
    keep = nms_impl<scalar_t>(boxes, order.data(), iou_threshold);
  });
  return keep;
}

at::Tensor batched_nms_cpu(
    const at::Tensor& boxes,
    const at::Tensor& scores,
    const at::Tensor& idxs,
    double iou_threshold) {
  detail::check_inputs(boxes, scores, &idxs, iou_threshold);
  if (boxes.size(0) == 0) return empty_keep(boxes);
  const std::vector<int64_t> order = score_order(scores);
  at::Tensor keep;
  AT_DISPATCH_FLOATING_TYPES(detail::compute_dtype(boxes), "posenet_batched_nms_cpu", [&] {
    keep = batched_nms_impl<scalar_t>(boxes, order.data(), idxs, iou_threshold);
  });
  return keep;
}

TORCH_LIBRARY_IMPL(posenet, CPU, m) {
  m.impl("nms", TORCH_FN(nms_cpu));
  m.impl("batched_nms", TORCH_FN(batched_nms_cpu));
}

}  // namespace ops
}  // namespace posenet
