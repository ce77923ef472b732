fn main() -> std::process::ExitCode {
    // SAFETY: no other thread has been started yet.
    unsafe { newstag::cli::set_up_process() };
    newstag::model::ops::tune_allocator();
    newstag::device::on_compute_threads(newstag::cli::main)
}
