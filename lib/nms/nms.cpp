// Operator schemas of the posenet library. Kernels are registered per backend in
// nms_cpu.cpp and nms_cuda.cu; loading the shared object (import posenet._C, or
// torch.ops.load_library) runs these static registrations.
#include <Python.h>
#include <torch/library.h>

#include "nms.h"

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

static PyMethodDef posenet_c_methods[] = {
    {"cpu_isa", cpu_isa, METH_NOARGS,
     "Instruction set of the CPU NMS kernel's inner loop: avx512, avx2 or baseline."},
    {nullptr, nullptr, 0, nullptr}};

static struct PyModuleDef posenet_c_module = {
    PyModuleDef_HEAD_INIT, "_C", "Compiled operators of posenet (see torch.ops.posenet).", -1,
    posenet_c_methods};

PyMODINIT_FUNC PyInit__C(void) {
  return PyModule_Create(&posenet_c_module);
}
