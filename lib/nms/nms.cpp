// Operator schemas of the posenet library. Kernels are registered per backend in
// nms_cpu.cpp and nms_cuda.cu (peaks_cpu.cpp defines and registers posenet::peak_cells itself);
// loading the shared object (import posenet._C, or torch.ops.load_library) runs these static
// registrations.
#include <Python.h>
#include <torch/library.h>

#include <cmath>
#include <cstdlib>

#include "nms.h"

namespace posenet {
namespace ops {
namespace detail {

static const char* dtype_name(const at::Tensor& t) {
  return c10::toString(t.scalar_type());
}

void check_inputs(
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

void throw_non_finite(const char* what) {
  TORCH_CHECK_VALUE(false, "nms: ", what, " contain NaN or infinite values");
  abort();  // unreachable
}

}  // namespace detail
}  // namespace ops
}  // namespace posenet

TORCH_LIBRARY(posenet, m) {
  m.def("nms(Tensor boxes, Tensor scores, float iou_threshold) -> Tensor");
  m.def(
      "batched_nms(Tensor boxes, Tensor scores, Tensor idxs, float iou_threshold) -> Tensor");
}

// A minimal Python module so that `import posenet._C` loads the library (and so registers
// the operators); the operators are reached through torch.ops.posenet.
static PyObject* cpu_isa(PyObject*, PyObject*) {
  return PyUnicode_FromString(posenet::ops::cpu_isa());
}

static PyObject* set_cpu_isa(PyObject*, PyObject* arg) {
  const char* name = PyUnicode_AsUTF8(arg);
  if (name == nullptr) return nullptr;
  const char* previous = posenet::ops::cpu_isa();
  if (!posenet::ops::set_cpu_isa(name)) {
    PyErr_Format(PyExc_ValueError,
                 "set_cpu_isa: %R is not an instruction set of this CPU's NMS kernel "
                 "(baseline, avx2 or avx512; this CPU goes up to %s)", arg,
                 posenet::ops::widest_cpu_isa());
    return nullptr;
  }
  return PyUnicode_FromString(previous);
}

static PyMethodDef posenet_c_methods[] = {
    {"cpu_isa", cpu_isa, METH_NOARGS,
     "Instruction set of the CPU kernels' inner loops (NMS, peak cells): avx512, avx2 or baseline."},
    {"set_cpu_isa", set_cpu_isa, METH_O,
     "set_cpu_isa(name) -> previous name: run the CPU kernels' inner loops (NMS, peak cells) in a "
     "narrower instruction set (baseline, avx2, avx512; ValueError if this CPU lacks it)."},
    {nullptr, nullptr, 0, nullptr}};

static struct PyModuleDef posenet_c_module = {
    PyModuleDef_HEAD_INIT, "_C", "Compiled operators of posenet (see torch.ops.posenet).", -1,
    posenet_c_methods};

PyMODINIT_FUNC PyInit__C(void) {
  return PyModule_Create(&posenet_c_module);
}
