include!("targets.rs");

fn main() {
    println!("cargo:rerun-if-changed=targets.rs");
    println!("cargo:rerun-if-changed=build.rs");
    let have = emit_backend_cfgs();
    choose_default(have);
}
