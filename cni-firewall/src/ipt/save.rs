//! Reading `iptables-save` output and writing `iptables-restore` input.

/// One rule as printed by `iptables-save`: `-A <chain> <args...>`, args unquoted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedRule {
    pub chain: String,
    pub args: Vec<String>,
}

impl SavedRule {
    pub fn new(chain: &str, args: Vec<String>) -> Self {
        SavedRule { chain: chain.to_string(), args }
    }

    /// The value following option `opt` (first occurrence).
    pub fn value(&self, opt: &str) -> Option<&str> {
        let i = self.args.iter().position(|a| a == opt)?;
        self.args.get(i + 1).map(String::as_str)
    }

    /// The jump (`-j`) or goto (`-g`) target.
    pub fn target(&self) -> Option<&str> {
        self.value("-j").or_else(|| self.value("-g"))
    }

    pub fn comment(&self) -> Option<&str> {
        self.value("--comment")
    }

    /// The rule as a restore line with `op` (`-A`, `-D`, `-I`).
    pub fn line(&self, op: &str) -> String {
        let mut s = format!("{op} {}", self.chain);
        for a in &self.args {
            s.push(' ');
            s.push_str(&quote(a));
        }
        s
    }
}

/// One table of an `iptables-save` dump.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SavedTable {
    /// Every chain declared (`:NAME POLICY [..]`), builtin and user, in dump order.
    pub chains: Vec<String>,
    pub rules: Vec<SavedRule>,
}

impl SavedTable {
    pub fn has_chain(&self, name: &str) -> bool {
        self.chains.iter().any(|c| c == name)
    }

    pub fn rules_of<'a>(&'a self, chain: &'a str) -> impl Iterator<Item = &'a SavedRule> + 'a {
        self.rules.iter().filter(move |r| r.chain == chain)
    }

    pub fn contains(&self, rule: &SavedRule) -> bool {
        self.rules.iter().any(|r| r == rule)
    }
}

/// Parse table `table` (e.g. `nat`) out of an `iptables-save` dump; empty when absent.
pub fn parse_table(dump: &str, table: &str) -> SavedTable {
    let mut out = SavedTable::default();
    let mut in_table = false;
    for line in dump.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(t) = line.strip_prefix('*') {
            in_table = t == table;
            continue;
        }
        if !in_table {
            continue;
        }
        if line == "COMMIT" {
            in_table = false;
            continue;
        }
        if let Some(decl) = line.strip_prefix(':') {
            if let Some(name) = decl.split_whitespace().next() {
                out.chains.push(name.to_string());
            }
            continue;
        }
        let toks = tokenize(line);
        if toks.len() >= 2 && toks[0] == "-A" {
            out.rules.push(SavedRule { chain: toks[1].clone(), args: toks[2..].to_vec() });
        }
    }
    out
}

/// Split a save/restore line into arguments: whitespace separated, `"..."` quoting with `\"` and `\\`
/// escapes (what `iptables-save` prints and `iptables-restore` reads).
pub fn tokenize(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut have = false;
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '\\' => {
                    if let Some(&n) = chars.peek() {
                        if n == '"' || n == '\\' {
                            cur.push(n);
                            chars.next();
                            continue;
                        }
                    }
                    cur.push('\\');
                }
                '"' => quoted = false,
                _ => cur.push(c),
            }
        } else if c == '"' {
            quoted = true;
            have = true;
        } else if c.is_whitespace() {
            if have {
                out.push(std::mem::take(&mut cur));
                have = false;
            }
        } else {
            cur.push(c);
            have = true;
        }
    }
    if have {
        out.push(cur);
    }
    out
}

/// Quote an argument for a restore line when needed.
pub fn quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:,!=+@[]%".contains(c));
    if plain {
        return arg.to_string();
    }
    let mut s = String::with_capacity(arg.len() + 2);
    s.push('"');
    for c in arg.chars() {
        if c == '"' || c == '\\' {
            s.push('\\');
        }
        s.push(c);
    }
    s.push('"');
    s
}

/// Builder of one `iptables-restore --noflush` transaction on table `nat`/`filter`.
#[derive(Debug, Clone, Default)]
pub struct RestoreScript {
    table: String,
    lines: Vec<String>,
}

impl RestoreScript {
    pub fn new(table: &str) -> Self {
        RestoreScript { table: table.to_string(), lines: Vec::new() }
    }
    /// Create a chain; the transaction fails if it already exists.
    pub fn new_chain(&mut self, chain: &str) {
        self.lines.push(format!("-N {chain}"));
    }
    pub fn flush_chain(&mut self, chain: &str) {
        self.lines.push(format!("-F {chain}"));
    }
    pub fn delete_chain(&mut self, chain: &str) {
        self.lines.push(format!("-X {chain}"));
    }
    pub fn append(&mut self, rule: &SavedRule) {
        self.lines.push(rule.line("-A"));
    }
    /// Insert at position 1.
    pub fn insert(&mut self, rule: &SavedRule) {
        self.lines.push(rule.line("-I"));
    }
    pub fn delete(&mut self, rule: &SavedRule) {
        self.lines.push(rule.line("-D"));
    }
    /// A raw command line (e.g. a `-C` guard).
    pub fn push_line(&mut self, line: String) {
        self.lines.push(line);
    }
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }
    pub fn lines(&self) -> &[String] {
        &self.lines
    }
    /// The restore input: `*table`, the commands, `COMMIT`.
    pub fn render(&self) -> String {
        let mut s = format!("*{}\n", self.table);
        for l in &self.lines {
            s.push_str(l);
            s.push('\n');
        }
        s.push_str("COMMIT\n");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMP: &str = r#"# Generated by iptables-save v1.8.9 (nf_tables) on Thu Nov 26 11:23:45 2026
*filter
:INPUT ACCEPT [0:0]
-A INPUT -j ACCEPT
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:CNI-96499d5ef693007d260ed91e - [0:0]
-A POSTROUTING -s 10.99.0.2/32 -m comment --comment "name: \"probenet\" id: \"ctr1\"" -j CNI-96499d5ef693007d260ed91e
-A CNI-96499d5ef693007d260ed91e ! -d 224.0.0.0/4 -m comment --comment "name: \"probenet\" id: \"ctr1\"" -j MASQUERADE
COMMIT
"#;

    #[test]
    fn parse_reference_dump() {
        let t = parse_table(DUMP, "nat");
        assert_eq!(t.chains, vec!["PREROUTING", "POSTROUTING", "CNI-96499d5ef693007d260ed91e"]);
        assert_eq!(t.rules.len(), 2);
        let r = &t.rules[0];
        assert_eq!(r.chain, "POSTROUTING");
        assert_eq!(r.comment(), Some(r#"name: "probenet" id: "ctr1""#));
        assert_eq!(r.target(), Some("CNI-96499d5ef693007d260ed91e"));
        assert_eq!(r.value("-s"), Some("10.99.0.2/32"));
        assert_eq!(t.rules[1].args[0], "!");
        assert_eq!(parse_table(DUMP, "filter").rules.len(), 1);
        assert_eq!(parse_table(DUMP, "mangle"), SavedTable::default());
    }

    #[test]
    fn quote_round_trip() {
        let t = parse_table(DUMP, "nat");
        for r in &t.rules {
            let line = r.line("-A");
            assert!(DUMP.contains(&line), "{line}");
            let toks = tokenize(&line);
            assert_eq!(&toks[2..], &r.args[..]);
        }
        assert_eq!(quote("a b"), "\"a b\"");
        assert_eq!(quote("x\\\"y"), "\"x\\\\\\\"y\"");
        assert_eq!(tokenize(&quote("x\\\"y")), vec!["x\\\"y"]);
        assert_eq!(quote(""), "\"\"");
        assert_eq!(tokenize("a \"\" b"), vec!["a", "", "b"]);
    }

    #[test]
    fn script() {
        let mut s = RestoreScript::new("nat");
        s.new_chain("CNI-x");
        s.append(&SavedRule::new("CNI-x", vec!["-j".into(), "ACCEPT".into()]));
        assert_eq!(s.render(), "*nat\n-N CNI-x\n-A CNI-x -j ACCEPT\nCOMMIT\n");
    }
}
