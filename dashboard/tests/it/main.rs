//! The dashboard's end-to-end tests: real runs and a study under a temporary root, the app on
//! 127.0.0.1, its pages, downloads, live updates and token checked over HTTP.

mod auth;
mod browser;
mod common;
mod live;
mod pages;
