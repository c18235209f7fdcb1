// The Python module saliencymixplus._C. Importing it (after torch) runs the static
// TORCH_LIBRARY registrations of every op; the module itself holds nothing.
#include <Python.h>

extern "C" {
PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT,
      "_C",  // name
      "Registers the torch.ops.saliencymixplus operators.",  // doc
      -1,  // no per-interpreter state
      nullptr,  // no methods: the ops are reached through torch.ops
  };
  return PyModule_Create(&module_def);
}
}
