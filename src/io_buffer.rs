//! A buffer of `IO_BUFFER` bytes per thread, for moving bodies and function output: kept between
//! calls (a fresh 64 KiB zeroed allocation per call showed up in profiles) and freed when the
//! thread ends.

/// Size of the buffer stdout, stderr and bodies are moved through.
pub(crate) const IO_BUFFER: usize = 64 * 1024;

thread_local! {
    static SPARE_BUFFER: std::cell::Cell<Option<Vec<u8>>> = const { std::cell::Cell::new(None) };
}

/// An I/O buffer of `IO_BUFFER` bytes, kept per worker thread between calls (a fresh 64 KiB
/// zeroed allocation per call showed up in profiles).
pub(crate) struct IoBuffer(Vec<u8>);

impl IoBuffer {
    pub(crate) fn take() -> IoBuffer {
        IoBuffer(SPARE_BUFFER.with(|b| b.take()).unwrap_or_else(|| vec![0u8; IO_BUFFER]))
    }

    /// Frees this thread's spare buffer (the thread is about to end).
    pub(crate) fn release() {
        SPARE_BUFFER.with(|b| drop(b.take()));
    }
}

impl Drop for IoBuffer {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.0);
        SPARE_BUFFER.with(|b| b.set(Some(buf)));
    }
}

impl std::ops::Deref for IoBuffer {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl std::ops::DerefMut for IoBuffer {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }
}
