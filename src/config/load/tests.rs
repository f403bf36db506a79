//! Host-dependent defaults: mynetworks styles and inet_protocols /
//! inet_interfaces.

use super::*;

fn locals() -> Vec<(IpAddr, u8)> {
    vec![
        ("127.0.0.1".parse().unwrap(), 8),
        ("192.0.2.2".parse().unwrap(), 24),
        ("::1".parse().unwrap(), 128),
        ("fd00::2".parse().unwrap(), 64),
    ]
}

#[test]
fn mynetworks_styles_as_postfix_prints_them() {
    let l = locals();
    assert_eq!(
        default_mynetworks("host", "all", "all", &l).unwrap(),
        "127.0.0.1/32 192.0.2.2/32 [::1]/128 [fd00::2]/128"
    );
    assert_eq!(
        default_mynetworks("subnet", "all", "all", &l).unwrap(),
        "127.0.0.0/8 192.0.2.0/24 [::1]/128 [fd00::]/64"
    );
    assert_eq!(default_mynetworks("class", "all", "ipv4", &l).unwrap(), "127.0.0.0/8 192.0.2.0/24");
    assert_eq!(default_mynetworks("host", "loopback-only", "all", &l).unwrap(), "127.0.0.1/32 [::1]/128");
    assert_eq!(default_mynetworks("subnet", "192.0.2.2", "all", &l).unwrap(), "192.0.2.0/24");
    assert!(default_mynetworks("wide", "all", "all", &l).is_err());
}

#[test]
fn protocols_and_interfaces() {
    assert_eq!(parse_protocols("all"), Ok((true, true)));
    assert_eq!(parse_protocols("ipv4, ipv6"), Ok((true, true)));
    assert_eq!(parse_protocols("ipv6"), Ok((false, true)));
    assert!(parse_protocols("ipx").is_err());
    assert_eq!(interface_addresses("all"), Ok(None));
    assert_eq!(interface_addresses("127.0.0.1, [::1]").unwrap().unwrap().len(), 2);
    assert!(interface_addresses("").is_err());
}
