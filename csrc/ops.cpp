// Every op of the pymusicrbm library, one schema a line. Kernels live in <name>_cpu.cpp and cuda/<name>_cuda.cu;
// fakes and autograd in pymusicrbm/ops.py.
#include <Python.h>
#include <torch/library.h>

extern "C" {
// `import pymusicrbm._C` loads this library, whose static initialisers register the ops below.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(pymusicrbm, m) {
  // Random numbers: the exact streams the samplers below consume (one draw from the generator per call).
  m.def("philox_uniform_(Tensor(a!) out, Generator? generator=None) -> ()");
  m.def("philox_normal_(Tensor(a!) out, Generator? generator=None) -> ()");
  // Dense RBM.
  m.def("sample_hidden(Tensor v, Tensor W, Tensor c, Tensor? sigma=None, Generator? generator=None) -> (Tensor, Tensor)");
  m.def("sample_visible(Tensor h, Tensor W, Tensor b, Tensor? sigma=None, str visible='bernoulli', Generator? generator=None) -> (Tensor, Tensor)");
  m.def("free_energy(Tensor v, Tensor W, Tensor b, Tensor c, Tensor? sigma=None, str visible='bernoulli') -> Tensor");
  // The CD step in two parts, for data-parallel training (all-reduce the statistics between them): cd_stats computes
  // a batch's statistics (weights data_weight / chain_weight per data row / chain, negative = 1/rows) and advances
  // the chains; cd_apply_ applies momentum, weight decay (W only) and lr to any (W, b, c), dense or convolutional,
  // if the result is finite, and returns that as a 0-d bool tensor on the parameters' device (no host sync).
  // cd_step_ = cd_stats + cd_apply_ with the default weights, bit for bit; it returns sq_err / v.numel().
  m.def("cd_stats(Tensor W, Tensor b, Tensor c, Tensor v, Tensor(a!)? chains=None, Tensor? sigma=None, str visible='bernoulli', int k=1, float sparsity_target=0.0, float sparsity_cost=0.0, float data_weight=-1, float chain_weight=-1, Generator? generator=None) -> (Tensor dW, Tensor db, Tensor dc, Tensor sq_err)");
  m.def("cd_apply_(Tensor(a!) W, Tensor(b!) b, Tensor(c!) c, Tensor(d!) W_vel, Tensor(e!) b_vel, Tensor(f!) c_vel, Tensor dW, Tensor db, Tensor dc, float lr, float momentum=0.0, float weight_decay=0.0) -> Tensor");
  m.def("cd_step_(Tensor(a!) W, Tensor(b!) b, Tensor(c!) c, Tensor(d!) W_vel, Tensor(e!) b_vel, Tensor(f!) c_vel, Tensor v, Tensor(g!)? chains=None, Tensor? sigma=None, str visible='bernoulli', int k=1, float lr=0.01, float momentum=0.0, float weight_decay=0.0, float sparsity_target=0.0, float sparsity_cost=0.0, Generator? generator=None) -> Tensor");
  // cd_steps_: cd_step_ over the batches data[order[i*batch_size : (i+1)*batch_size]] of an epoch, in one call;
  // returns each step's error.
  m.def("cd_steps_(Tensor(a!) W, Tensor(b!) b, Tensor(c!) c, Tensor(d!) W_vel, Tensor(e!) b_vel, Tensor(f!) c_vel, Tensor data, Tensor order, int batch_size, Tensor(g!)? chains=None, Tensor? sigma=None, str visible='bernoulli', int k=1, float lr=0.01, float momentum=0.0, float weight_decay=0.0, float sparsity_target=0.0, float sparsity_cost=0.0, Generator? generator=None) -> Tensor");
  // Convolutional RBM (kernels in conv_rbm_cpu.cpp and cuda/conv_rbm_cuda.cu; model and checks in conv_rbm.h).
  m.def("conv_sample_hidden(Tensor v, Tensor W, Tensor c, int pool=1, Tensor? sigma=None, Generator? generator=None) -> (Tensor, Tensor, Tensor)");
  m.def("conv_sample_visible(Tensor h, Tensor W, Tensor b, Tensor? sigma=None, str visible='bernoulli', Generator? generator=None) -> (Tensor, Tensor)");
  m.def("conv_cd_stats(Tensor W, Tensor b, Tensor c, Tensor v, Tensor(a!)? chains=None, Tensor? sigma=None, str visible='bernoulli', int pool=1, int k=1, float sparsity_target=0.0, float sparsity_cost=0.0, float data_weight=-1, float chain_weight=-1, Generator? generator=None) -> (Tensor dW, Tensor db, Tensor dc, Tensor sq_err)");
  m.def("conv_cd_step_(Tensor(a!) W, Tensor(b!) b, Tensor(c!) c, Tensor(d!) W_vel, Tensor(e!) b_vel, Tensor(f!) c_vel, Tensor v, Tensor(g!)? chains=None, Tensor? sigma=None, str visible='bernoulli', int pool=1, int k=1, float lr=0.01, float momentum=0.0, float weight_decay=0.0, float sparsity_target=0.0, float sparsity_cost=0.0, Generator? generator=None) -> Tensor");
}
