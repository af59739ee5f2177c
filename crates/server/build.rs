// `sqlx::migrate!` embeds `migrations/` at compile time, but on stable Rust it cannot tell Cargo
// to rebuild when a migration changes: without this, an edited migration reached the binary only
// after some Rust file changed too.
fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
