//! Tauri's build step: reads `tauri.conf.json` and `capabilities/`, and checks
//! that `../ui/dist` exists (build the UI first: `npm --prefix ui run build`).

fn main() {
    tauri_build::build()
}
