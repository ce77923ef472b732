fn main() -> std::process::ExitCode {
    // SAFETY: no other thread has been started yet.
    unsafe { newstag::device::fix_thread_count() };
    newstag::model::ops::tune_allocator();
    newstag::device::on_compute_threads(newstag::cli::main)
}
