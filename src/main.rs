fn main() -> std::process::ExitCode {
    // SAFETY: no other thread has been started yet.
    unsafe { newstag::cli::set_up_process() };
    newstag::runtime::on_compute_threads(newstag::cli::main)
}
