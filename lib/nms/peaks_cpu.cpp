// CPU kernel of posenet::peak_cells: the cells of heatmap peaks, best first per channel.
//
// The same result as posenet.portable.peaks.peak_cells (numpy), cell for cell:
//   * a peak is a cell at or above the threshold that is the maximum of its 3x3 neighbourhood
//     (neighbours off the map do not count; a NaN in the neighbourhood makes no peak, as the
//     NaN-propagating maximum filter does): v >= threshold and v >= every neighbour;
//   * per channel, the peaks by decreasing value, equal values by increasing flat index, the
//     first max_peaks kept;
//   * the entries past a channel's peaks hold index -1 and value 0.
// The threshold is compared in float32 (the heatmaps' dtype), as numpy and torch compare a
// float32 array with a Python float. One branch-free pass over each map's inner cells that the
// compiler vectorises (built per instruction set, picked at run time as the NMS kernel's), the
// border cells with bounds; the few candidates are then sorted per channel.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "nms.h"

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define POSENET_PEAKS_X86 1
#if defined(__clang__)
#define POSENET_PEAKS_AVX512_TARGET "avx512f,avx512vl,avx512dq,avx512bw"
#else
#define POSENET_PEAKS_AVX512_TARGET "avx512f,avx512vl,avx512dq,avx512bw,prefer-vector-width=512"
#endif
#endif

#if defined(__GNUC__)
#define POSENET_PEAKS_INLINE inline __attribute__((always_inline))
#else
#define POSENET_PEAKS_INLINE inline
#endif

namespace posenet {
namespace ops {
namespace {

struct Peak {
  float value;
  int64_t index;
};

inline bool better(const Peak& a, const Peak& b) {
  return a.value > b.value || (a.value == b.value && a.index < b.index);
}

// Flags f[i] = whether cell i of a map of width w is a peak for begin <= i < end, cells whose
// eight neighbours all lie in the map at offsets +-1, +-w, +-w+-1 of the flat index: v >= thr and
// v >= each neighbour. The first and last column read the previous and next row there instead
// of nothing and are redone with bounds afterwards (edge_peak). Branch free, one long loop over
// the map's inner rows, so the compiler vectorises it; compiled per instruction set and picked at
// run time (cpu_isa(), shared with the NMS kernel).
POSENET_PEAKS_INLINE void flags_body(const float* __restrict map, int64_t begin, int64_t end, int64_t w,
                                     float thr, uint8_t* __restrict f) {
  for (int64_t i = begin; i < end; ++i) {
    const float v = map[i];
    f[i] = static_cast<uint8_t>((v >= thr) & (map[i - w - 1] <= v) & (map[i - w] <= v) &
                                (map[i - w + 1] <= v) & (map[i - 1] <= v) & (map[i + 1] <= v) &
                                (map[i + w - 1] <= v) & (map[i + w] <= v) & (map[i + w + 1] <= v));
  }
}

#define POSENET_FLAGS_ARGS \
  const float *__restrict map, int64_t begin, int64_t end, int64_t w, float thr, uint8_t *__restrict f
using FlagsFn = void (*)(POSENET_FLAGS_ARGS);

void flags_baseline(POSENET_FLAGS_ARGS) {
  flags_body(map, begin, end, w, thr, f);
}

#ifdef POSENET_PEAKS_X86
__attribute__((target("avx2"))) void flags_avx2(POSENET_FLAGS_ARGS) {
  flags_body(map, begin, end, w, thr, f);
}

__attribute__((target(POSENET_PEAKS_AVX512_TARGET))) void flags_avx512(POSENET_FLAGS_ARGS) {
  flags_body(map, begin, end, w, thr, f);
}
#endif

FlagsFn flags_fn() {
#ifdef POSENET_PEAKS_X86
  const char* isa = cpu_isa();
  if (std::strcmp(isa, "avx512") == 0) return &flags_avx512;
  if (std::strcmp(isa, "avx2") == 0) return &flags_avx2;
#endif
  return &flags_baseline;
}

// The same test with bounds, for the first and last column.
inline bool edge_peak(const float* up, const float* row, const float* down, int64_t x, int64_t w, float thr) {
  const float v = row[x];
  if (!(v >= thr)) return false;
  for (int64_t dx = -1; dx <= 1; ++dx) {
    const int64_t c = x + dx;
    if (c < 0 || c >= w) continue;
    if (!(up[c] <= v) || !(down[c] <= v) || (dx != 0 && !(row[c] <= v))) return false;
  }
  return true;
}

// The peaks of one h x w map into index[0, m) and value[0, m); `flags` holds h * w + 8 bytes,
// the last eight 0.
void channel_peaks(FlagsFn inner, const float* map, int64_t h, int64_t w, float thr, int64_t m,
                   const float* outside, uint8_t* flags, std::vector<Peak>& found, int64_t* index, float* value) {
  // the inner rows but their first and last cells, so that every neighbour read lies in the map
  if (h > 2 && (h - 1) * w - 1 > w + 1) inner(map, w + 1, (h - 1) * w - 1, w, thr, flags);
  for (int64_t y = 0; y < h; ++y) {
    const float* row = map + y * w;
    const float* up = y > 0 ? row - w : outside;
    const float* down = y + 1 < h ? row + w : outside;
    uint8_t* f = flags + y * w;
    if (y == 0 || y == h - 1) {
      for (int64_t x = 0; x < w; ++x) f[x] = edge_peak(up, row, down, x, w, thr);
    } else {
      f[0] = edge_peak(up, row, down, 0, w, thr);
      f[w - 1] = edge_peak(up, row, down, w - 1, w, thr);
    }
  }
  found.clear();
  for (int64_t i = 0; i < h * w; i += 8) {  // flags are rare: skip eight at a time
    uint64_t word;
    std::memcpy(&word, flags + i, sizeof(word));
    if (word == 0) continue;
    for (int64_t j = i; j < i + 8 && j < h * w; ++j) {
      if (flags[j]) found.push_back({map[j], j});
    }
  }
  const int64_t kept = std::min<int64_t>(m, static_cast<int64_t>(found.size()));
  std::partial_sort(found.begin(), found.begin() + kept, found.end(), better);
  for (int64_t i = 0; i < kept; ++i) {
    index[i] = found[i].index;
    value[i] = found[i].value;
  }
  std::fill(index + kept, index + m, int64_t{-1});
  std::fill(value + kept, value + m, 0.0f);
}

std::tuple<at::Tensor, at::Tensor> peak_cells_cpu(const at::Tensor& heat, double threshold, int64_t max_peaks) {
  TORCH_CHECK_VALUE(heat.dim() >= 2, "peak_cells: heatmaps must be (..., H, W), got ", heat.sizes());
  TORCH_CHECK_TYPE(heat.scalar_type() == at::kFloat, "peak_cells: heatmaps must be float32, got ",
                   c10::toString(heat.scalar_type()));
  TORCH_CHECK_VALUE(max_peaks >= 0, "peak_cells: max_peaks must be at least 0, got ", max_peaks);
  const at::Tensor maps = heat.contiguous();
  const int64_t h = maps.size(-2), w = maps.size(-1);
  const int64_t m = std::min<int64_t>(max_peaks, h * w);
  auto shape = maps.sizes().vec();
  shape.pop_back();
  shape.back() = m;
  at::Tensor index = at::empty(shape, maps.options().dtype(at::kLong));
  at::Tensor value = at::empty(shape, maps.options());
  const int64_t channels = h * w > 0 ? maps.numel() / (h * w) : 0;
  if (channels == 0 || m == 0) return {index, value};
  const float thr = static_cast<float>(threshold);
  const float* data = maps.data_ptr<float>();
  int64_t* index_out = index.data_ptr<int64_t>();
  float* value_out = value.data_ptr<float>();
  const FlagsFn inner = flags_fn();
  at::parallel_for(0, channels, 4, [&](int64_t begin, int64_t end) {
    std::vector<float> outside(w, -std::numeric_limits<float>::infinity());
    std::vector<uint8_t> flags(h * w + 8, 0);  // padded for the eight-at-a-time scan
    std::vector<Peak> found;
    for (int64_t c = begin; c < end; ++c) {
      channel_peaks(inner, data + c * h * w, h, w, thr, m, outside.data(), flags.data(), found, index_out + c * m,
                    value_out + c * m);
    }
  });
  return {index, value};
}

}  // namespace
}  // namespace ops
}  // namespace posenet

TORCH_LIBRARY_FRAGMENT(posenet, m) {
  m.def("peak_cells(Tensor heatmaps, float threshold, int max_peaks) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(posenet, CPU, m) {
  m.impl("peak_cells", &posenet::ops::peak_cells_cpu);
}
