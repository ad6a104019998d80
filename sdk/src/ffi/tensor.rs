//! Tensors across the boundary: a borrowed [`TensorRef`] in, an owned [`TensorHandle`] out.
//!
//! Both sides of the boundary run against the same libtorch in one process, so a tensor is just
//! a pointer to a `torch::Tensor` (tch's `C_tensor`). Autograd graphs, grad mode and the RNG are
//! shared. Who frees what:
//! - [`TensorRef`] is lent for one call. The callee never frees it; it takes its own reference
//!   with [`TensorRef::to_tensor`] (a shallow clone sharing storage and autograd history).
//! - [`TensorHandle`] owns its tensor. The receiver takes it with [`TensorHandle::into_tensor`];
//!   a handle dropped unread frees its tensor.

use abi_stable::{std_types::RString, StableAbi};
use std::{ffi::c_void, marker::PhantomData, mem::ManuallyDrop, ptr::NonNull};
use tch::Tensor;
use torch_sys::C_tensor;

/// A tensor lent for the duration of one call; see the module doc for ownership.
#[repr(transparent)]
#[derive(StableAbi, Clone, Copy)]
pub struct TensorRef<'a> {
    ptr: NonNull<c_void>,
    _lent: PhantomData<&'a ()>,
}

impl<'a> TensorRef<'a> {
    /// Lends `t` for as long as the borrow lives.
    pub fn new(t: &'a Tensor) -> Self {
        let ptr = NonNull::new(t.as_ptr() as *mut c_void).expect("tch tensors are never null");
        TensorRef {
            ptr,
            _lent: PhantomData,
        }
    }

    /// Takes a new reference to the lent tensor (shares storage and autograd graph).
    pub fn to_tensor(&self) -> Tensor {
        // SAFETY: `ptr` came from a live `Tensor` borrowed for 'a; `clone_from_ptr` makes a new
        // `torch::Tensor` handle (refcount + 1) and does not take ownership of the pointer.
        unsafe { Tensor::clone_from_ptr(self.ptr.as_ptr() as *mut C_tensor) }
    }
}

/// An owned tensor moving across the boundary; see the module doc for ownership.
#[repr(transparent)]
#[derive(StableAbi)]
pub struct TensorHandle {
    ptr: NonNull<c_void>,
}

// SAFETY: a `torch::Tensor` handle may move between threads (tch's `Tensor` is `Send`).
unsafe impl Send for TensorHandle {}

impl TensorHandle {
    /// Gives up ownership of `t` to whoever receives the handle.
    pub fn new(t: Tensor) -> Self {
        let mut t = ManuallyDrop::new(t);
        let ptr = NonNull::new(t.as_mut_ptr() as *mut c_void).expect("tch tensors are never null");
        TensorHandle { ptr }
    }

    /// Takes ownership of the tensor back.
    pub fn into_tensor(self) -> Tensor {
        let this = ManuallyDrop::new(self);
        // SAFETY: the pointer was produced by `TensorHandle::new`, which leaked its `Tensor`;
        // `this` is never dropped, so ownership passes to the new `Tensor` exactly once.
        unsafe { Tensor::from_ptr(this.ptr.as_ptr() as *mut C_tensor) }
    }
}

impl Drop for TensorHandle {
    fn drop(&mut self) {
        // SAFETY: as in `into_tensor`; the handle was not consumed, so it still owns the tensor,
        // and dropping the rebuilt `Tensor` frees it once.
        drop(unsafe { Tensor::from_ptr(self.ptr.as_ptr() as *mut C_tensor) });
    }
}

/// A lent tensor with its name.
#[repr(C)]
#[derive(StableAbi, Clone, Copy)]
pub struct NamedTensorRef<'a> {
    /// The tensor's name in its map.
    pub name: abi_stable::std_types::RStr<'a>,
    /// The lent tensor.
    pub tensor: TensorRef<'a>,
}

/// An owned tensor with its name.
#[repr(C)]
#[derive(StableAbi)]
pub struct NamedTensorHandle {
    /// The tensor's name in its map.
    pub name: RString,
    /// The owned tensor.
    pub tensor: TensorHandle,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handle_round_trip_keeps_data_and_graph() {
        let x = Tensor::from_slice(&[1.0f64, 2.0, 3.0]).set_requires_grad(true);
        let y = (&x * &x).sum(tch::Kind::Double);
        let y2 = TensorHandle::new(y).into_tensor();
        let g = Tensor::run_backward(&[&y2], &[&x], false, false);
        assert_eq!(Vec::<f64>::try_from(&g[0]).unwrap(), vec![2.0, 4.0, 6.0]);
    }

    #[test]
    fn borrowed_ref_shares_storage() {
        let x = Tensor::zeros([2], (tch::Kind::Float, tch::Device::Cpu));
        let mut y = TensorRef::new(&x).to_tensor();
        let _ = y.fill_(5.0);
        assert_eq!(Vec::<f32>::try_from(&x).unwrap(), vec![5.0, 5.0]);
    }

    #[test]
    fn dropped_handle_frees_without_crashing() {
        for _ in 0..1000 {
            drop(TensorHandle::new(Tensor::ones(
                [64],
                (tch::Kind::Float, tch::Device::Cpu),
            )));
        }
    }
}
