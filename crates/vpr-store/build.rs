//! Rebuilds the crate when a migration changes, because `sqlx::migrate!` embeds
//! the `migrations` folder at compile time and cargo does not track it otherwise.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
