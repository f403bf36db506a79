//! The daemon's resolver (`SystemResolver::with_servers`, what
//! `sluice_dns_servers` configures) against the tests' loopback DNS
//! server: answers, the kinds of failure callers act on, TCP for answers
//! too big for UDP, and a silent server ended by the caller's deadline.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use common::dns_server::DnsServer;
use sluice::resolver::{Family, Resolver, SystemResolver};

fn resolver(dns: &DnsServer) -> SystemResolver {
    SystemResolver::with_servers(&[dns.addr()]).expect("resolver")
}

#[tokio::test]
async fn records_come_back_as_served() {
    let dns = DnsServer::start();
    dns.a("host.example.test", Ipv4Addr::new(192, 0, 2, 10))
        .aaaa("host.example.test", "2001:db8::10".parse().unwrap())
        .mx("example.test", 10, "host.example.test")
        .txt("example.test", "v=spf1 -all")
        .ptr("192.0.2.10".parse().unwrap(), "host.example.test");
    let r = resolver(&dns);
    assert_eq!(r.mx("example.test").await.unwrap(), vec![(10, "host.example.test".to_owned())]);
    assert_eq!(r.ips_of("host.example.test", Family::V4).await.unwrap(), vec![IpAddr::from([192, 0, 2, 10])]);
    assert_eq!(
        r.ips_of("host.example.test", Family::V6).await.unwrap(),
        vec!["2001:db8::10".parse::<IpAddr>().unwrap()]
    );
    assert_eq!(r.txt("example.test").await.unwrap(), vec!["v=spf1 -all".to_owned()]);
    assert_eq!(r.ptr("192.0.2.10".parse().unwrap()).await.unwrap(), vec!["host.example.test".to_owned()]);
    assert!(dns.asked().contains(&"example.test MX".to_owned()), "{:?}", dns.asked());
}

#[tokio::test]
async fn a_long_record_arrives_over_tcp() {
    let dns = DnsServer::start();
    // A 2048-bit DKIM key record is split into character-strings that the
    // resolver joins again.
    let key = format!("v=DKIM1; k=rsa; p={}", "A".repeat(392));
    dns.txt("sel._domainkey.example.test", &key);
    // More than an EDNS UDP answer holds (1232 bytes): truncated, then
    // asked again over TCP.
    for _ in 0..8 {
        dns.txt("big.example.test", &"x".repeat(250));
    }
    let r = resolver(&dns);
    assert_eq!(r.txt("sel._domainkey.example.test").await.unwrap(), vec![key]);
    assert_eq!(r.txt("big.example.test").await.unwrap().len(), 8);
    assert!(dns.tcp_queries() >= 1, "the big answer came over TCP");
}

#[tokio::test]
async fn missing_names_are_permanent_and_broken_ones_temporary() {
    let dns = DnsServer::start();
    dns.a("exists.example.test", Ipv4Addr::new(192, 0, 2, 1)).servfail("broken.example.test");
    let r = resolver(&dns);
    assert!(r.txt("nowhere.example.test").await.unwrap_err().is_permanent(), "NXDOMAIN");
    assert!(r.txt("exists.example.test").await.unwrap_err().is_permanent(), "no records of the type");
    assert!(!r.txt("broken.example.test").await.unwrap_err().is_permanent(), "SERVFAIL");
}

#[tokio::test]
async fn a_silent_server_is_ended_by_the_callers_deadline() {
    let dns = DnsServer::start();
    dns.silence("slow.example.test");
    let r = resolver(&dns);
    let late = tokio::time::timeout(Duration::from_millis(300), r.txt("slow.example.test")).await;
    assert!(late.is_err(), "no answer ever comes");
    dns.heal("slow.example.test").txt("slow.example.test", "back");
    // A fresh resolver: the first one may have cached nothing, but its
    // query is still in flight.
    assert_eq!(resolver(&dns).txt("slow.example.test").await.unwrap(), vec!["back".to_owned()]);
}
