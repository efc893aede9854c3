//! A fleet of boards that learn apart and merge into one model (issue 18): its accuracy simulated in one
//! process ([`sim`]), the merger over MQTT ([`serve`]), a mosquitto broker for it ([`broker`]) and the fleet on
//! this machine with real processes ([`demo`]).

pub mod broker;
pub mod demo;
pub mod serve;
pub mod sim;
