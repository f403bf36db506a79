//! `ldap:` tables against a private OpenLDAP slapd: the same `.cf` files
//! give the same answers in sluice as in Postfix's `postmap -q` (search
//! expansions, quoting, multi-valued results, result_format, the domain
//! list, group expansion through DNs and LDAP URLs, binds), cached answers
//! do not reach the server, and a server that goes away fails lookups
//! until it is back.

mod common;

use common::directory::{
    LDIF, Slapd, need_postfix_map, same_as_postmap, sluice_errors, sluice_query, sluice_table, write,
};

fn cf(slapd: &Slapd, extra: &str) -> String {
    format!("server_host = {}\nversion = 3\nsearch_base = dc=example,dc=com\n{extra}", slapd.url())
}

#[test]
fn ldap_tables_answer_as_postmap_does() {
    need_postfix_map("ldap");
    let slapd = Slapd::start(LDIF);
    let d = tempfile::tempdir().unwrap();
    let cases: &[(&str, String, &[&str])] = &[
        (
            "users.cf",
            cf(&slapd, "query_filter = (mailLocalAddress=%s)\nresult_attribute = mailRoutingAddress\n"),
            &[
                "joe@example.com",
                "JOSEPH@Example.COM",
                "nobody@example.com",
                "a*b@example.com",
                "*@example.com",
                "joe(",
                "@example.com",
            ],
        ),
        (
            // Several values of one attribute, and a result format.
            "aliases.cf",
            cf(
                &slapd,
                "query_filter = (uid=%u)\nresult_attribute = mailLocalAddress\nresult_format = <%s>\n",
            ),
            &["joe@anything.example", "joe", "ann", "nobody"],
        ),
        (
            // transport_maps from mailHost; only example.com is asked.
            "transport.cf",
            cf(
                &slapd,
                "query_filter = (mailLocalAddress=%s)\nresult_attribute = mailHost\nresult_format = lmtp:[%s]:24\ndomain = example.com\n",
            ),
            &["joe@example.com", "ann@example.com", "joe@other.example", "joe", "example.com"],
        ),
        (
            // The search base built from the key's domain labels; a base
            // that does not exist is "not found" when it depends on the key.
            "base.cf",
            format!(
                "server_host = {}\nversion = 3\nsearch_base = ou=people,dc=%2,dc=%1\nquery_filter = (mail=%s)\nresult_attribute = uid\n",
                slapd.url()
            ),
            &["joe@example.com", "joe@example.org", "joe@com", "joe"],
        ),
        (
            // Group members through their DNs (leaf attributes).
            "groups.cf",
            cf(
                &slapd,
                "query_filter = (mailLocalAddress=%s)\nresult_attribute =\nspecial_result_attribute = member\nleaf_result_attribute = mail\n",
            ),
            &["staff@example.com", "joe@example.com"],
        ),
        (
            // Members through an LDAP URL.
            "dynamic.cf",
            cf(
                &slapd,
                "query_filter = (mailLocalAddress=%s)\nresult_attribute = mail\nspecial_result_attribute = memberURL\n",
            ),
            &["everyone@example.com", "ann@example.com"],
        ),
        (
            // A simple bind as the directory's administrator.
            "bind.cf",
            cf(
                &slapd,
                "bind = yes\nbind_dn = cn=admin,dc=example,dc=com\nbind_pw = secret\nquery_filter = (mail=%s)\nresult_attribute = uid\n",
            ),
            &["ann@example.com", "nobody@example.com"],
        ),
        (
            // More entries than size_limit (and expansion_limit) allow.
            "limit.cf",
            cf(&slapd, "query_filter = (mail=*%d)\nresult_attribute = uid\nexpansion_limit = 1\n"),
            &["x@example.com", "x@nowhere.example"],
        ),
    ];
    for (name, text, keys) in cases {
        let path = write(d.path(), name, text);
        let spec = format!("ldap:{}", path.display());
        let table = sluice_table(d.path(), &spec, "");
        same_as_postmap(&table, &spec, keys);
    }
    // Spot checks of what the comparison covered.
    let t = sluice_table(d.path(), &format!("ldap:{}", d.path().join("groups.cf").display()), "");
    assert_eq!(
        sluice_query(&t, "staff@example.com").unwrap().as_deref(),
        Some("joe@example.com,ann@example.com")
    );
    let t = sluice_table(d.path(), &format!("ldap:{}", d.path().join("users.cf").display()), "");
    assert_eq!(sluice_query(&t, "a*b@example.com").unwrap().as_deref(), Some("star@mbx1.example.com"));
    assert_eq!(sluice_query(&t, "*@example.com").unwrap(), None, "the key is quoted, not a wildcard");
}

#[test]
fn lookup_errors_as_postmap_has_them() {
    need_postfix_map("ldap");
    let slapd = Slapd::start(LDIF);
    let d = tempfile::tempdir().unwrap();
    for (name, text) in [
        (
            "badpw.cf",
            cf(&slapd, "bind_dn = cn=admin,dc=example,dc=com\nbind_pw = wrong\nquery_filter = (mail=%s)\n"),
        ),
        (
            "nobase.cf",
            format!(
                "server_host = {}\nversion = 3\nsearch_base = dc=nowhere\nquery_filter = (mail=%s)\n",
                slapd.url()
            ),
        ),
    ] {
        let path = write(d.path(), name, &text);
        let spec = format!("ldap:{}", path.display());
        let table = sluice_table(d.path(), &spec, "");
        let answers = same_as_postmap(&table, &spec, &["joe@example.com"]);
        assert!(answers[0].is_err(), "{name}: {answers:?}");
    }
}

#[test]
fn cached_answers_do_not_reach_the_server() {
    let slapd = Slapd::start(LDIF);
    let d = tempfile::tempdir().unwrap();
    let path = write(
        d.path(),
        "users.cf",
        &cf(&slapd, "query_filter = (mailLocalAddress=%s)\nresult_attribute = mailRoutingAddress\n"),
    );
    let table = sluice_table(d.path(), &format!("ldap:{}", path.display()), "");
    for _ in 0..5 {
        assert_eq!(sluice_query(&table, "joe@example.com").unwrap().as_deref(), Some("joe@mbx1.example.com"));
        assert_eq!(sluice_query(&table, "nobody@example.com").unwrap(), None);
    }
    assert_eq!(slapd.searches("mailLocalAddress=joe@example.com"), 1, "{}", slapd.log());
    assert_eq!(slapd.searches("mailLocalAddress=nobody@example.com"), 1);
}

#[test]
fn a_stopped_server_fails_lookups_until_it_is_back() {
    let mut slapd = Slapd::start(LDIF);
    let d = tempfile::tempdir().unwrap();
    let path = write(
        d.path(),
        "users.cf",
        &cf(
            &slapd,
            "query_filter = (mailLocalAddress=%s)\nresult_attribute = mailRoutingAddress\ntimeout = 2\n",
        ),
    );
    let main = "sluice_table_cache_positive_lifetime = 0\nsluice_table_breaker_cooldown = 200ms\n";
    let table = sluice_table(d.path(), &format!("ldap:{}", path.display()), main);
    assert!(sluice_query(&table, "joe@example.com").unwrap().is_some());
    slapd.stop();
    for _ in 0..4 {
        let e = sluice_query(&table, "joe@example.com").unwrap_err();
        assert!(e.contains(&format!("ldap:{}", path.display())), "{e}");
    }
    slapd.resume();
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(sluice_query(&table, "joe@example.com").unwrap().as_deref(), Some("joe@mbx1.example.com"));
}

#[test]
fn start_tls_and_ldaps_with_a_verified_certificate() {
    need_postfix_map("ldap");
    let pki = common::inbound::TestPki::new();
    let slapd = Slapd::start_tls(LDIF, &pki.cert_pem, &pki.key_pem);
    let d = tempfile::tempdir().unwrap();
    let ca = write(d.path(), "ca.pem", &pki.ca_pem);
    let other = write(d.path(), "other-ca.pem", &common::inbound::TestPki::new().ca_pem);
    let query = "version = 3\nsearch_base = dc=example,dc=com\nquery_filter = (mail=%s)\nresult_attribute = uid\ntls_require_cert = yes\n";
    for (name, text, found) in [
        (
            "starttls.cf",
            format!(
                "server_host = {}\nstart_tls = yes\ntls_ca_cert_file = {}\n{query}",
                slapd.url(),
                ca.display()
            ),
            true,
        ),
        (
            "ldaps.cf",
            format!(
                "server_host = ldaps://127.0.0.1:{}\ntls_ca_cert_file = {}\n{query}",
                slapd.ldaps_port.unwrap(),
                ca.display()
            ),
            true,
        ),
        // A certificate from a CA the table does not trust: no lookup.
        (
            "untrusted.cf",
            format!(
                "server_host = {}\nstart_tls = yes\ntls_ca_cert_file = {}\n{query}",
                slapd.url(),
                other.display()
            ),
            false,
        ),
    ] {
        let path = write(d.path(), name, &text);
        let spec = format!("ldap:{}", path.display());
        let table = sluice_table(d.path(), &spec, "");
        let answers = same_as_postmap(&table, &spec, &["joe@example.com"]);
        if found {
            assert_eq!(answers[0].as_ref().unwrap().as_deref(), Some("joe"), "{name}");
        } else {
            assert!(answers[0].is_err(), "{name}: {answers:?}");
        }
    }
}

#[test]
fn cf_files_are_checked_at_load_without_connecting() {
    let d = tempfile::tempdir().unwrap();
    // Port 9 answers nothing: loading must not try it.
    let path = write(
        d.path(),
        "bad.cf",
        "server_host = 127.0.0.1:9\nsearch_base = dc=example,dc=com\nquery_filter = (mail=%s\nserverhost = x\nbind = sasl\nscope = sub\ntimeout = soon\n",
    );
    let errors = sluice_errors(d.path(), &format!("ldap:{}", path.display()));
    let p = path.display();
    for want in [
        format!("{p}:3: query_filter: \"(mail=%s\" is not a valid LDAP filter"),
        format!("{p}:4: serverhost: unknown parameter for a ldap table (see ldap_table(5))"),
        format!("{p}:5: bind: SASL binds are not supported"),
        format!("{p}:7: timeout: bad numerical value \"soon\""),
    ] {
        assert!(errors.iter().any(|e| e.starts_with(&want)), "missing {want:?} in {errors:#?}");
    }
    let good = write(d.path(), "good.cf", "server_host = 127.0.0.1:9\nsearch_base = dc=example,dc=com\n");
    assert!(sluice_errors(d.path(), &format!("proxy:ldap:{}", good.display())).is_empty());
    let missing = sluice_errors(d.path(), "ldap:ldapsource");
    assert!(missing[0].contains("the main.cf form ldapsource_* is not supported"), "{missing:?}");
}
