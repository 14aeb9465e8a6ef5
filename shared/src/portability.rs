//! The SQL this service sends must run on MySQL 8 / Aurora MySQL 3, while every test here
//! runs on MariaDB 10.11, which accepts more. This check reads the MySQL migrations and every
//! string literal in the Rust sources of the shared crate and the functions, and fails on a
//! construct from the list below (the README's "MySQL 8 / Aurora MySQL 3" section explains
//! each one).
//!
//! A line that must use one on purpose (a session setting sent only after the server said it
//! is MariaDB) carries the marker `portable-sql: allow <id>` in a comment on a line of that
//! literal, naming the one construct it allows.

use std::path::{Path, PathBuf};

use regex_lite::Regex;

/// (id, pattern, why): the constructs MySQL 8 / Aurora MySQL 3 refuses or that need
/// privileges an Aurora account does not have. Patterns are matched case-insensitively
/// against SQL with comments removed.
pub const FORBIDDEN: &[(&str, &str, &str)] = &[
    (
        "returning",
        r"\bRETURNING\b",
        "INSERT/DELETE … RETURNING is MariaDB only; read the id from the result instead",
    ),
    (
        "create-or-replace",
        r"\bCREATE\s+OR\s+REPLACE\s+(TABLE|INDEX|TRIGGER|SEQUENCE|DATABASE|SCHEMA|USER|ROLE|PROCEDURE|FUNCTION|EVENT|SERVER)\b",
        "CREATE OR REPLACE is MariaDB only (MySQL has it for views alone)",
    ),
    (
        "alter-if-exists",
        r"\b(ADD|DROP|MODIFY|CHANGE|RENAME)\s+(COLUMN\s+|INDEX\s+|KEY\s+|UNIQUE\s+(INDEX\s+|KEY\s+)?|CONSTRAINT\s+|FOREIGN\s+KEY\s+|PARTITION\s+)?IF\s+(NOT\s+)?EXISTS\b",
        "ALTER TABLE … ADD/DROP/MODIFY … IF [NOT] EXISTS is MariaDB only",
    ),
    (
        "create-index-if-not-exists",
        r"\bCREATE\s+(UNIQUE\s+|FULLTEXT\s+|SPATIAL\s+)?INDEX\s+IF\s+NOT\s+EXISTS\b",
        "CREATE INDEX IF NOT EXISTS is MariaDB only",
    ),
    (
        "sequence",
        r"\b(CREATE\s+SEQUENCE|NEXTVAL\s*\(|LASTVAL\s*\(|SETVAL\s*\(|NEXT\s+VALUE\s+FOR|PREVIOUS\s+VALUE\s+FOR|seq_\d+_to_\d+)",
        "sequences and the SEQUENCE engine's seq_1_to_n tables are MariaDB only",
    ),
    (
        "wait-n",
        r"\bWAIT\s+\d",
        "FOR UPDATE WAIT n / ALTER … WAIT n are MariaDB only (NOWAIT and SKIP LOCKED are portable)",
    ),
    (
        "set-statement",
        r"\bSET\s+STATEMENT\b",
        "SET STATEMENT … FOR is MariaDB only",
    ),
    (
        "max-statement-time",
        r"\bmax_statement_time\b",
        "MariaDB's statement timeout; MySQL has max_execution_time (SELECT only)",
    ),
    (
        "values-in-upsert",
        r"\bON\s+DUPLICATE\s+KEY\s+UPDATE\b.*\bVALUES\s*\(",
        "VALUES() in ON DUPLICATE KEY UPDATE is deprecated since MySQL 8.0.20 and MariaDB \
         lacks the row alias: bind the value again",
    ),
    (
        "mariadb-json",
        r"\bJSON_(DETAILED|PRETTY_PRINT|LOOSE|COMPACT|EXISTS|QUERY|EQUALS|NORMALIZE|KEY_VALUE|ARRAY_INTERSECT|OBJECT_FILTER_KEYS|OBJECT_TO_ARRAY)\s*\(",
        "JSON functions MariaDB has and MySQL 8 lacks",
    ),
    (
        "mariadb-types",
        r"\b(INET4|INET6|XMLTYPE)\b|\bUUID\b\s*(NOT\s+NULL|NULL|DEFAULT|,|\))",
        "column types MariaDB has and MySQL 8 lacks (MySQL stores UUIDs as BINARY(16) or CHAR(36))",
    ),
    (
        "system-versioning",
        r"\b(WITH\s+SYSTEM\s+VERSIONING|FOR\s+SYSTEM_TIME|PERIOD\s+FOR)\b",
        "system-versioned and application-time period tables are MariaDB only",
    ),
    (
        "fetch-first",
        r"\bFETCH\s+(FIRST|NEXT)\b",
        "OFFSET … FETCH FIRST is MariaDB only; use LIMIT",
    ),
    (
        "set-operators",
        r"\b(INTERSECT|EXCEPT)\b",
        "INTERSECT/EXCEPT need MySQL 8.0.31 (Aurora MySQL 3.05); earlier Aurora 3 releases refuse them",
    ),
    (
        "mariadb-collation",
        r"_uca1400_",
        "the uca1400 collations are MariaDB 10.10+ only",
    ),
    (
        "stored-programs",
        r"\b(CREATE\s+(DEFINER\s*=\s*\S+\s+)?(TRIGGER|FUNCTION|PROCEDURE|EVENT)|DEFINER\s*=|DELIMITER)\b",
        "triggers and stored functions need SUPER or log_bin_trust_function_creators on a \
         server with binary logging; DEFINER needs SET_USER_ID; keep logic in the store",
    ),
    (
        "non-innodb-engine",
        r"\bENGINE\s*=\s*(MyISAM|Aria|MEMORY|CSV|ARCHIVE|SEQUENCE|CONNECT|S3|ColumnStore|Spider)\b",
        "Aurora MySQL stores InnoDB tables only",
    ),
];

/// The marker that allows one construct on the lines of one literal.
const MARKER: &str = "portable-sql: allow ";

/// One construct found, where, and in what text.
#[derive(Debug, PartialEq)]
pub struct Finding {
    pub id: &'static str,
    pub place: String,
    pub text: String,
}

/// Every forbidden construct in `sql`, unless `allowed` names it.
pub fn findings_in(sql: &str, place: &str, allowed: &[String]) -> Vec<Finding> {
    let code = strip_sql_comments(sql);
    let flat = code.split_whitespace().collect::<Vec<_>>().join(" ");
    FORBIDDEN
        .iter()
        .filter(|(id, _, _)| !allowed.iter().any(|a| a == id))
        .filter_map(|(id, pattern, _)| {
            let re = Regex::new(&format!("(?i){pattern}")).expect("a valid pattern");
            re.find(&flat).map(|m| Finding {
                id,
                place: place.to_owned(),
                text: m.as_str().to_owned(),
            })
        })
        .collect()
}

/// SQL without `-- …`, `# …` and `/* … */` comments (quoted text is kept as it is).
fn strip_sql_comments(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' | '`' => {
                out.push(c);
                for q in chars.by_ref() {
                    out.push(q);
                    if q == c {
                        break;
                    }
                }
            }
            '-' if chars.peek() == Some(&'-') => {
                for q in chars.by_ref() {
                    if q == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '#' => {
                for q in chars.by_ref() {
                    if q == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut last = ' ';
                for q in chars.by_ref() {
                    if last == '*' && q == '/' {
                        break;
                    }
                    last = q;
                }
                out.push(' ');
            }
            _ => out.push(c),
        }
    }
    out
}

/// A string literal of a Rust source: its text (escapes and line continuations resolved as
/// far as SQL needs) and the lines it spans.
#[derive(Debug)]
pub struct Literal {
    pub text: String,
    pub first_line: usize,
    pub last_line: usize,
}

/// The string literals of a Rust source (plain and raw), skipping comments and char literals.
pub fn string_literals(source: &str) -> Vec<Literal> {
    let bytes = source.as_bytes();
    let mut literals = Vec::new();
    let mut line = 1;
    let mut i = 0;
    let count_lines =
        |from: usize, to: usize| bytes[from..to].iter().filter(|b| **b == b'\n').count();
    while i < bytes.len() {
        match bytes[i] {
            b'\n' => {
                line += 1;
                i += 1;
            }
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                let end = source[i + 2..]
                    .find("*/")
                    .map_or(bytes.len(), |e| i + 2 + e + 2);
                line += count_lines(i, end);
                i = end;
            }
            b'\'' => {
                // A char literal ('x', '\n', '\'') or a lifetime ('a): skip either.
                if bytes.get(i + 1) == Some(&b'\\') {
                    let end = source[i + 2..]
                        .find('\'')
                        .map_or(bytes.len(), |e| i + 2 + e + 1);
                    i = if bytes.get(i + 2) == Some(&b'\'') {
                        i + 4
                    } else {
                        end
                    };
                } else if bytes.get(i + 2) == Some(&b'\'') {
                    i += 3;
                } else {
                    i += 1;
                }
            }
            b'r' if matches!(bytes.get(i + 1), Some(b'"' | b'#'))
                && (i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_')) =>
            {
                let hashes = bytes[i + 1..].iter().take_while(|b| **b == b'#').count();
                let open = i + 1 + hashes;
                if bytes.get(open) != Some(&b'"') {
                    i += 1;
                    continue;
                }
                let close = format!("\"{}", "#".repeat(hashes));
                let body_start = open + 1;
                let body_end = source[body_start..]
                    .find(&close)
                    .map_or(bytes.len(), |e| body_start + e);
                let spanned = count_lines(i, body_end);
                literals.push(Literal {
                    text: source[body_start..body_end].to_owned(),
                    first_line: line,
                    last_line: line + spanned,
                });
                line += spanned;
                i = (body_end + close.len()).min(bytes.len());
            }
            b'"' => {
                let mut text = String::new();
                let start_line = line;
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    if bytes[i] == b'\\' {
                        match bytes.get(i + 1) {
                            // A line continuation: the newline and the next line's indent go.
                            Some(b'\n') => {
                                line += 1;
                                i += 2;
                                while i < bytes.len() && bytes[i].is_ascii_whitespace() {
                                    if bytes[i] == b'\n' {
                                        line += 1;
                                    }
                                    i += 1;
                                }
                                continue;
                            }
                            Some(b'n') => text.push('\n'),
                            Some(&other) => text.push(other as char),
                            None => {}
                        }
                        i += 2;
                        continue;
                    }
                    if bytes[i] == b'\n' {
                        line += 1;
                    }
                    // Whole characters, so non-ASCII text stays intact.
                    let ch = source[i..].chars().next().unwrap_or(' ');
                    text.push(ch);
                    i += ch.len_utf8();
                }
                literals.push(Literal {
                    text,
                    first_line: start_line,
                    last_line: line,
                });
                i += 1;
            }
            _ => i += 1,
        }
    }
    literals
}

/// The constructs the marker comments on `lines` allow.
fn allowed_on(lines: &[&str]) -> Vec<String> {
    lines
        .iter()
        .filter_map(|l| l.split_once("//").map(|(_, comment)| comment))
        .filter_map(|comment| comment.split_once(MARKER).map(|(_, rest)| rest))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(|id| id.trim_end_matches([',', ';', '.', ':']).to_owned())
        .collect()
}

/// Whether a literal holds SQL (or a fragment a query builder joins): the sources write SQL
/// keywords in capitals, so an English message that says "except" or "returning" is not read.
fn looks_like_sql(text: &str) -> bool {
    let keywords = Regex::new(
        r"\b(SELECT|INSERT|UPDATE|DELETE|REPLACE|CREATE|ALTER|DROP|SET|FROM|WHERE|AND|OR|JOIN|VALUES|LIMIT|ORDER|GROUP|RETURNING|ENGINE|TABLE|INDEX|FOR|ON|BEGIN|COMMIT)\b",
    )
    .expect("a valid pattern");
    keywords.is_match(text)
}

/// Findings in the SQL literals of one Rust source.
pub fn findings_in_rust(source: &str, place: &str) -> Vec<Finding> {
    let lines: Vec<&str> = source.lines().collect();
    string_literals(source)
        .into_iter()
        .filter(|lit| looks_like_sql(&lit.text))
        .flat_map(|lit| {
            let span =
                &lines[(lit.first_line - 1).min(lines.len())..lit.last_line.min(lines.len())];
            let allowed = allowed_on(span);
            findings_in(&lit.text, &format!("{place}:{}", lit.first_line), &allowed)
        })
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("the workspace")
            .to_owned()
    }

    #[test]
    fn no_migration_uses_a_construct_mysql_8_refuses() {
        let dir = root().join("migrations/mysql");
        let mut found = Vec::new();
        let mut files = 0;
        for entry in std::fs::read_dir(&dir).expect("migrations/mysql") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "sql") {
                files += 1;
                let sql = std::fs::read_to_string(&path).expect("read");
                found.extend(findings_in(&sql, &path.display().to_string(), &[]));
            }
        }
        assert!(files >= 6, "the migrations were read: {files}");
        assert!(found.is_empty(), "{found:#?}");
    }

    #[test]
    fn no_sql_in_the_sources_uses_a_construct_mysql_8_refuses() {
        let mut files = Vec::new();
        rust_files(&root().join("shared/src"), &mut files);
        rust_files(&root().join("functions"), &mut files);
        assert!(files.len() > 20, "the sources were read: {}", files.len());
        let found: Vec<Finding> = files
            .iter()
            // This file names every construct on purpose.
            .filter(|p| !p.ends_with("portability.rs"))
            .flat_map(|p| {
                let source = std::fs::read_to_string(p).expect("read");
                findings_in_rust(&source, &p.display().to_string())
            })
            .collect();
        assert!(found.is_empty(), "{found:#?}");
    }

    #[test]
    fn each_construct_is_caught_in_the_form_it_takes() {
        let cases = [
            (
                "returning",
                "INSERT INTO call_room (a) VALUES (?) RETURNING id",
            ),
            ("returning", "DELETE FROM t WHERE id = ? returning *"),
            ("create-or-replace", "CREATE OR REPLACE TABLE t (a INT)"),
            (
                "alter-if-exists",
                "ALTER TABLE t ADD COLUMN IF NOT EXISTS a INT",
            ),
            ("alter-if-exists", "ALTER TABLE t ADD IF NOT EXISTS a INT"),
            ("alter-if-exists", "ALTER TABLE t DROP INDEX IF EXISTS ix"),
            (
                "alter-if-exists",
                "ALTER TABLE t ADD KEY IF NOT EXISTS ix (a)",
            ),
            (
                "create-index-if-not-exists",
                "CREATE INDEX IF NOT EXISTS ix ON t (a)",
            ),
            ("sequence", "SELECT NEXTVAL(s)"),
            ("sequence", "INSERT INTO t SELECT seq FROM seq_1_to_100"),
            ("wait-n", "SELECT * FROM t WHERE id = ? FOR UPDATE WAIT 5"),
            (
                "set-statement",
                "SET STATEMENT max_execution_time = 5 FOR SELECT 1",
            ),
            ("max-statement-time", "SET SESSION max_statement_time = 5"),
            (
                "values-in-upsert",
                "INSERT INTO t (a, b) VALUES (?, ?) ON DUPLICATE KEY UPDATE b = VALUES(b)",
            ),
            ("mariadb-json", "SELECT JSON_DETAILED(doc) FROM t"),
            ("mariadb-types", "CREATE TABLE t (id UUID NOT NULL)"),
            ("mariadb-types", "CREATE TABLE t (ip INET6)"),
            (
                "system-versioning",
                "CREATE TABLE t (a INT) WITH SYSTEM VERSIONING",
            ),
            (
                "fetch-first",
                "SELECT a FROM t ORDER BY a OFFSET 2 ROWS FETCH FIRST 3 ROWS ONLY",
            ),
            ("set-operators", "SELECT a FROM t EXCEPT SELECT a FROM u"),
            ("mariadb-collation", "COLLATE utf8mb4_uca1400_ai_ci"),
            (
                "stored-programs",
                "CREATE TRIGGER tr AFTER INSERT ON t FOR EACH ROW SET @a = 1",
            ),
            (
                "stored-programs",
                "CREATE DEFINER = admin FUNCTION f() RETURNS INT RETURN 1",
            ),
            ("non-innodb-engine", "CREATE TABLE t (a INT) ENGINE = Aria"),
        ];
        for (id, sql) in cases {
            let found: Vec<&str> = findings_in(sql, "case", &[]).iter().map(|f| f.id).collect();
            assert!(found.contains(&id), "{id} not caught in {sql:?}: {found:?}");
        }
        // The portable forms pass.
        for sql in [
            "CREATE TABLE IF NOT EXISTS t (a INT)",
            "DROP TABLE IF EXISTS t",
            "DROP TRIGGER IF EXISTS tr_room_count_insert",
            "SELECT id FROM t WHERE a = ? FOR UPDATE NOWAIT",
            "SELECT id FROM t FOR UPDATE SKIP LOCKED",
            "INSERT INTO t (a, b) VALUES (?, ?) ON DUPLICATE KEY UPDATE b = b + 1",
            "SET SESSION max_execution_time = 5000",
            "SELECT UUID()",
            "CREATE TABLE t (a INT) ENGINE = InnoDB",
            "-- RETURNING in a comment is fine\nSELECT 1",
        ] {
            let found = findings_in(sql, "case", &[]);
            assert!(found.is_empty(), "{sql:?}: {found:?}");
        }
    }

    #[test]
    fn the_scan_reads_string_literals_and_honours_a_marker_for_its_construct_only() {
        let source = r####"
            // A RETURNING in a comment is no SQL.
            const A: &str = "INSERT INTO t (a) VALUES (?) \
                 RETURNING id";
            const B: &str = r#"SELECT JSON_DETAILED(x)"#;
            let c = '"'; let d = "SET SESSION max_statement_time = 5"; // portable-sql: allow max-statement-time
            let e = "SET SESSION max_statement_time = 5 RETURNING"; // portable-sql: allow max-statement-time
            let f = "SET STATEMENT x = 1 FOR SELECT 1"; // portable-sql: allow returning
        "####;
        let found: Vec<(&str, String)> = findings_in_rust(source, "src.rs")
            .into_iter()
            .map(|f| (f.id, f.place))
            .collect();
        assert_eq!(
            found,
            vec![
                ("returning", "src.rs:3".to_owned()),
                ("mariadb-json", "src.rs:5".to_owned()),
                // The marker allows the construct it names, not another on the same line.
                ("returning", "src.rs:7".to_owned()),
                ("set-statement", "src.rs:8".to_owned()),
            ]
        );
    }
}
