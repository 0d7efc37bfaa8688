//! Helpers for driving headless Chromium against the server: a network
//! namespace guard, a one-page HTTP server and a ChromeDriver client.

pub mod args;
pub mod netns;
pub mod page_server;
pub mod rerun;
pub mod test_page;
pub mod webdriver;
