fn main() -> std::process::ExitCode {
    let command_line = newstag::cli::parse();
    // SAFETY: no other thread has been started yet.
    unsafe { newstag::cli::set_up_process(&command_line.0) };
    newstag::runtime::on_compute_threads(|| newstag::cli::run(command_line))
}
