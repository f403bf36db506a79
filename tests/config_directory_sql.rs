//! `pgsql:`, `mysql:`, `sqlite:` and `socketmap:` tables against private
//! PostgreSQL and MariaDB servers, an SQLite file and a socketmap server:
//! the same `.cf` files give the same answers in sluice as in Postfix's
//! `postmap -q` (escaping, NULLs, several columns and rows, result_format,
//! expansion_limit, the domain list, the older query parameters, URIs and
//! UNIX sockets), cached answers do not reach the server, a server that
//! goes away fails lookups until it is back, and oversized replies fail.

mod common;

use common::directory::{
    Mariadb, Postgres, need_postfix_map, same_as_postmap, sluice_query, sluice_table, write,
};
use common::socketmap::{Mode, Socketmap};

/// Keys every SQL table is asked, besides its own.
const TRICKY: &[&str] = &[
    "joe@example.com",
    "JOE@Example.COM",
    "o'brien@example.com",
    "back\\slash@example.com",
    "x'; DELETE FROM mailbox; --@example.com",
    "nobody@example.com",
    "@example.com",
    "joe",
];

fn pg_setup(pg: &Postgres) {
    pg.sql("postgres", "CREATE ROLE mail LOGIN PASSWORD 'mailpw'");
    pg.sql("postgres", "CREATE DATABASE users OWNER mail");
    pg.sql(
        "users",
        "CREATE TABLE mailbox (address text PRIMARY KEY, maildir text, active boolean, quota int, host text);
         INSERT INTO mailbox VALUES
           ('joe@example.com', 'example.com/joe/', true, 1024, 'mbx1.example.com'),
           ('o''brien@example.com', 'example.com/obrien/', true, NULL, 'mbx2.example.com'),
           ('back\\slash@example.com', 'example.com/back/', false, 0, NULL),
           ('big@example.com', repeat('x', 5000), true, 0, NULL);
         CREATE TABLE alias (address text, goto text, position int);
         INSERT INTO alias VALUES ('staff@example.com', 'joe@example.com', 1), ('staff@example.com', 'ann@example.com', 2);
         CREATE FUNCTION maildir_of(text) RETURNS text AS $$ SELECT maildir FROM mailbox WHERE address = $1 $$ LANGUAGE sql;
         GRANT SELECT ON mailbox, alias TO mail;",
    );
}

#[test]
fn pgsql_tables_answer_as_postmap_does() {
    need_postfix_map("pgsql");
    let pg = Postgres::start();
    pg_setup(&pg);
    let d = tempfile::tempdir().unwrap();
    let login =
        format!("hosts = inet:127.0.0.1:{}\nuser = mail\npassword = mailpw\ndbname = users\n", pg.port);
    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        (
            "users.cf",
            format!("{login}query = SELECT maildir, active, quota FROM mailbox WHERE address='%s'\n"),
            TRICKY.to_vec(),
        ),
        (
            "alias.cf",
            format!("{login}query = SELECT goto FROM alias WHERE address='%s' ORDER BY position\n"),
            vec!["staff@example.com", "joe@example.com"],
        ),
        (
            "transport.cf",
            format!(
                "{login}query = SELECT host FROM mailbox WHERE address='%u@%d'\nresult_format = lmtp:[%s]:24\ndomain = example.com\n"
            ),
            vec!["joe@example.com", "back\\slash@example.com", "joe@other.example", "joe", "example.com"],
        ),
        (
            "limit.cf",
            format!("{login}query = SELECT goto FROM alias WHERE address='%s'\nexpansion_limit = 1\n"),
            vec!["staff@example.com"],
        ),
        (
            "legacy.cf",
            format!(
                "{login}select_field = maildir\ntable = mailbox\nwhere_field = address\nadditional_conditions = AND active\n"
            ),
            vec!["joe@example.com", "back\\slash@example.com"],
        ),
        (
            "function.cf",
            format!("{login}select_function = maildir_of\n"),
            vec!["joe@example.com", "nobody@example.com"],
        ),
        (
            "uri.cf",
            format!(
                // Postfix 3.7 wants a dbname even when the URI has one.
                "hosts = postgresql://mail:mailpw@127.0.0.1:{}/users?sslmode=disable\ndbname = users\nquery = SELECT maildir FROM mailbox WHERE address='%s'\n",
                pg.port
            ),
            vec!["joe@example.com"],
        ),
        (
            "badquery.cf",
            format!("{login}query = SELECT nosuchcolumn FROM mailbox WHERE address='%s'\n"),
            vec!["joe@example.com"],
        ),
    ];
    for (name, text, keys) in &cases {
        let path = write(d.path(), name, text);
        let spec = format!("pgsql:{}", path.display());
        let table = sluice_table(d.path(), &spec, "");
        same_as_postmap(&table, &spec, keys);
    }
    let t = sluice_table(d.path(), &format!("pgsql:{}", d.path().join("users.cf").display()), "");
    assert_eq!(sluice_query(&t, "o'brien@example.com").unwrap().as_deref(), Some("example.com/obrien/,t"));
    assert!(sluice_query(&t, "x'; DELETE FROM mailbox; --@example.com").unwrap().is_none());
    assert_eq!(pg.sql("users", "SELECT count(*) FROM mailbox"), "4\n", "the key could not change the query");
}

#[test]
fn pgsql_over_a_unix_socket() {
    need_postfix_map("pgsql");
    let pg = Postgres::start();
    pg_setup(&pg);
    let d = tempfile::tempdir().unwrap();
    // Postfix's `unix:/directory` names no port, so libpq looks for
    // .s.PGSQL.5432 there: give it one that leads to this server's.
    let sockets = d.path().join("run");
    std::fs::create_dir(&sockets).unwrap();
    std::os::unix::fs::symlink(
        pg.dir.path().join(format!(".s.PGSQL.{}", pg.port)),
        sockets.join(".s.PGSQL.5432"),
    )
    .unwrap();
    let path = write(
        d.path(),
        "socket.cf",
        &format!(
            "hosts = unix:{}\nuser = mail\ndbname = users\nquery = SELECT maildir FROM mailbox WHERE address='%s'\n",
            sockets.display()
        ),
    );
    let spec = format!("pgsql:{}", path.display());
    let t = sluice_table(d.path(), &spec, "");
    let answers = same_as_postmap(&t, &spec, &["joe@example.com", "nobody@example.com"]);
    assert_eq!(answers[0].as_ref().unwrap().as_deref(), Some("example.com/joe/"));
    // libpq's URI form with the directory and port as parameters.
    let path = write(
        d.path(),
        "uri.cf",
        &format!(
            "hosts = postgresql:///users?host={}&port={}\nuser = mail\nquery = SELECT maildir FROM mailbox WHERE address='%s'\n",
            pg.dir.path().display(),
            pg.port
        ),
    );
    let t = sluice_table(d.path(), &format!("pgsql:{}", path.display()), "");
    assert_eq!(sluice_query(&t, "joe@example.com").unwrap().as_deref(), Some("example.com/joe/"));
}

#[test]
fn pgsql_caches_fails_while_down_and_bounds_replies() {
    let mut pg = Postgres::start();
    pg_setup(&pg);
    let d = tempfile::tempdir().unwrap();
    let path = write(
        d.path(),
        "users.cf",
        &format!(
            "hosts = 127.0.0.1:{}\nuser = mail\npassword = mailpw\ndbname = users\nquery = SELECT maildir FROM mailbox WHERE address='%s'\n",
            pg.port
        ),
    );
    let spec = format!("pgsql:{}", path.display());
    let cached = sluice_table(d.path(), &spec, "sluice_table_reply_size_limit = 2048\n");
    for _ in 0..5 {
        assert_eq!(sluice_query(&cached, "joe@example.com").unwrap().as_deref(), Some("example.com/joe/"));
        assert_eq!(sluice_query(&cached, "nobody@example.com").unwrap(), None);
    }
    assert_eq!(pg.statements("address='joe@example.com'"), 1, "{}", pg.log());
    assert_eq!(pg.statements("address='nobody@example.com'"), 1);
    let e = sluice_query(&cached, "big@example.com").unwrap_err();
    assert!(e.contains("longer than 2048"), "{e}");

    let uncached = sluice_table(
        d.path(),
        &spec,
        "sluice_table_cache_positive_lifetime = 0\nsluice_table_cache_negative_lifetime = 0\nsluice_table_breaker_cooldown = 100ms\n",
    );
    assert!(sluice_query(&uncached, "joe@example.com").unwrap().is_some());
    pg.stop();
    for _ in 0..4 {
        let e = sluice_query(&uncached, "joe@example.com").unwrap_err();
        assert!(e.contains(&spec), "{e}");
    }
    pg.resume();
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(sluice_query(&uncached, "joe@example.com").unwrap().as_deref(), Some("example.com/joe/"));
}

#[test]
fn mysql_tables_answer_as_postmap_does() {
    need_postfix_map("mysql");
    let my = Mariadb::start();
    my.sql(
        "CREATE DATABASE users;
         CREATE USER 'mail'@'127.0.0.1' IDENTIFIED BY 'mailpw';
         GRANT SELECT ON users.* TO 'mail'@'127.0.0.1';
         CREATE TABLE users.mailbox (address varchar(255) PRIMARY KEY, maildir text, active bool, quota int, host text);
         INSERT INTO users.mailbox VALUES
           ('joe@example.com', 'example.com/joe/', 1, 1024, 'mbx1.example.com'),
           ('o''brien@example.com', 'example.com/obrien/', 1, NULL, 'mbx2.example.com'),
           ('back\\\\slash@example.com', 'example.com/back/', 0, 0, NULL);
         CREATE TABLE users.alias (address varchar(255), goto text, position int);
         INSERT INTO users.alias VALUES ('staff@example.com', 'joe@example.com', 1), ('staff@example.com', 'ann@example.com', 2);",
    );
    let d = tempfile::tempdir().unwrap();
    let login =
        format!("hosts = inet:127.0.0.1:{}\nuser = mail\npassword = mailpw\ndbname = users\n", my.port);
    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        (
            "users.cf",
            format!("{login}query = SELECT maildir, active, quota FROM mailbox WHERE address='%s'\n"),
            TRICKY.to_vec(),
        ),
        (
            "alias.cf",
            format!(
                "{login}query = SELECT goto FROM alias WHERE address='%s' ORDER BY position\nresult_format = <%s>\n"
            ),
            vec!["staff@example.com", "nobody@example.com"],
        ),
        (
            "limit.cf",
            format!("{login}query = SELECT goto FROM alias WHERE address='%s'\nexpansion_limit = 1\n"),
            vec!["staff@example.com"],
        ),
        (
            "legacy.cf",
            format!(
                "{login}select_field = host\ntable = mailbox\nwhere_field = address\ndomain = example.com\n"
            ),
            vec!["joe@example.com", "joe@other.example"],
        ),
    ];
    for (name, text, keys) in &cases {
        let path = write(d.path(), name, text);
        let spec = format!("mysql:{}", path.display());
        let table = sluice_table(d.path(), &spec, "");
        same_as_postmap(&table, &spec, keys);
    }
    let t = sluice_table(d.path(), &format!("mysql:{}", d.path().join("users.cf").display()), "");
    let query = "SELECT maildir, active, quota FROM mailbox WHERE address='joe@example.com'";
    let before = my.queries(query);
    for _ in 0..3 {
        assert_eq!(sluice_query(&t, "joe@example.com").unwrap().as_deref(), Some("example.com/joe/,1,1024"));
    }
    assert_eq!(my.queries(query), before + 1, "the second and third were cache hits");
    assert_eq!(my.sql("SELECT count(*) FROM users.mailbox"), "3\n");
}

#[test]
fn sqlite_tables_answer_as_postmap_does() {
    need_postfix_map("sqlite");
    let d = tempfile::tempdir().unwrap();
    let db = d.path().join("users.sqlite");
    let out = std::process::Command::new(common::need("sqlite3", "sqlite3"))
        .arg(&db)
        .arg(
            "CREATE TABLE mailbox (address text PRIMARY KEY, maildir text, active int, quota real);
             INSERT INTO mailbox VALUES ('joe@example.com', 'example.com/joe/', 1, 1.5),
               ('o''brien@example.com', 'example.com/obrien/', 1, NULL),
               ('back\\slash@example.com', 'example.com/back/', 0, 100.0);",
        )
        .output()
        .expect("sqlite3");
    assert!(out.status.success(), "{out:?}");
    common::directory::age(&db);
    let path = write(
        d.path(),
        "users.cf",
        &format!(
            "dbpath = {}\nquery = SELECT maildir, active, quota FROM mailbox WHERE address='%s'\n",
            db.display()
        ),
    );
    let spec = format!("sqlite:{}", path.display());
    let table = sluice_table(d.path(), &spec, "");
    same_as_postmap(&table, &spec, TRICKY);
    let path = write(
        d.path(),
        "numbers.cf",
        &format!("dbpath = {}\nquery = SELECT quota FROM mailbox WHERE address='%s'\n", db.display()),
    );
    let spec = format!("sqlite:{}", path.display());
    let table = sluice_table(d.path(), &spec, "");
    same_as_postmap(&table, &spec, &["joe@example.com", "back\\slash@example.com", "o'brien@example.com"]);
    let path =
        write(d.path(), "missing.cf", "dbpath = /nonexistent/x.sqlite\nquery = SELECT 1 WHERE '%s' = ''\n");
    let t = sluice_table(d.path(), &format!("sqlite:{}", path.display()), "");
    assert!(sluice_query(&t, "joe@example.com").is_err(), "a missing database is a lookup error");
}

#[test]
fn socketmap_tables_answer_as_postmap_does() {
    let map = Socketmap::start(&[
        ("users", "joe@example.com", "lmtp:[mbx1]:24"),
        ("users", "Ann@Example.com", "ok"),
    ]);
    let spec = format!("socketmap:inet:127.0.0.1:{}:users", map.port);
    let d = tempfile::tempdir().unwrap();
    let table = sluice_table(d.path(), &spec, "");
    same_as_postmap(
        &table,
        &spec,
        &["joe@example.com", "Ann@Example.com", "ann@example.com", "nobody@example.com"],
    );
    map.set_mode(Mode::Temp);
    let answers = same_as_postmap(&table, &spec, &["temp@example.com"]);
    assert!(answers[0].as_ref().is_err_and(|e| e.contains("directory restarting")), "{answers:?}");
}

#[test]
fn a_configuration_opens_any_table_for_queries() {
    let map = Socketmap::start(&[("users", "joe@example.com", "found")]);
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "aliases", "staff@example.com joe@example.com\n");
    let loaded = sluice::config::Config::from_texts(d.path(), "sluice_table_timeout = 2s\n", "").unwrap();
    let config = loaded.config;
    let t = config.open_table("texthash:aliases").unwrap();
    assert_eq!(sluice_query(&t, "STAFF@example.com").unwrap().as_deref(), Some("joe@example.com"));
    let t = config.open_table(&format!("proxy:socketmap:inet:127.0.0.1:{}:users", map.port)).unwrap();
    assert_eq!(sluice_query(&t, "joe@example.com").unwrap().as_deref(), Some("found"));
    let e = config.open_table("pgsql:missing.cf").unwrap_err();
    assert!(e.to_string().contains("cannot read table pgsql:"), "{e}");
}

#[test]
fn sluice_config_query_answers_as_postmap_q() {
    let map = Socketmap::start(&[
        ("users", "joe@example.com", "lmtp:[mbx1]:24"),
        ("users", "ann@example.com", "ok"),
    ]);
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "main.cf", "sluice_table_timeout = 2s\n");
    write(d.path(), "master.cf", "");
    let spec = format!("socketmap:inet:127.0.0.1:{}:users", map.port);
    let query = |args: &[&str], stdin: &str| {
        use std::io::Write;
        let mut child = std::process::Command::new(common::daemon::sluice_bin())
            .arg("-c")
            .arg(d.path())
            .args(["config", "query"])
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run sluice");
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert_eq!(query(&[&spec, "joe@example.com"], ""), (Some(0), "lmtp:[mbx1]:24\n".into(), String::new()));
    assert_eq!(query(&[&spec, "nobody@example.com"], "").0, Some(1));
    let (code, out, _) = query(&[&spec, "-"], "joe@example.com\nnobody@example.com\nann@example.com\n");
    assert_eq!((code, out.as_str()), (Some(0), "joe@example.com\tlmtp:[mbx1]:24\nann@example.com\tok\n"));
    map.set_mode(Mode::Temp);
    let (code, _, err) = query(&[&spec, "joe@example.com"], "");
    assert_eq!(code, Some(2));
    assert!(err.contains("lookup error for \"joe@example.com\""), "{err}");
    let (code, _, err) = query(&["ldap:missing.cf", "x"], "");
    assert_eq!(code, Some(2));
    assert!(err.contains("cannot read table ldap:"), "{err}");
}
