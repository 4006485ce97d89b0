//! Tests of the engine as a whole: Go semantics users rely on, and the bounds that make a
//! template useless as a bomb (each of these failed, hung, panicked or exhausted memory with the
//! engine this crate used before).

use std::collections::BTreeMap;

use zeroize::Zeroizing;

use crate::{MAX_NESTING, MAX_OUTPUT_BYTES, MAX_STEPS, TemplateError, render_all};

fn render(template: &str, values: &[(&str, &str)]) -> Result<String, TemplateError> {
    let templates = BTreeMap::from([("out".to_string(), template.to_string())]);
    let values = values
        .iter()
        .map(|(k, v)| (k.to_string(), Zeroizing::new(v.as_bytes().to_vec())))
        .collect();
    render_all(&templates, &values).map(|out| String::from_utf8(out["out"].to_vec()).unwrap())
}

fn ok(template: &str) -> String {
    render(template, VALUES).unwrap_or_else(|e| panic!("{template:?}: {e}"))
}

const VALUES: &[(&str, &str)] = &[
    ("user", "app"),
    ("host", "db.internal"),
    ("empty", ""),
    (
        "json",
        r#"{"b":2,"a":"x","list":[1,"two",true],"nested":{"k":"v"},"null":null}"#,
    ),
];

#[test]
fn text_trimming_and_comments() {
    assert_eq!(ok("a  {{- .user -}}  b"), "aappb");
    assert_eq!(ok("a\n  {{- /* gone */ -}}\n  b"), "ab");
    assert_eq!(ok("{{/* multi\nline */}}x"), "x");
    assert_eq!(ok("{{ 3 }}{{-3}}"), "3-3");
    assert_eq!(ok("é{{ .user }}€"), "éapp€");
}

#[test]
fn fields_dot_and_missing_keys() {
    assert_eq!(ok("{{ .missing }}"), "<no value>");
    assert_eq!(ok("{{ .missing.deeper }}"), "<no value>");
    assert_eq!(ok("{{ index . \"missing\" }}"), "<no value>");
    assert_eq!(ok("{{ $.user }}"), "app");
    assert_eq!(
        ok("{{ with .json | fromJson }}{{ .nested.k }}{{ .a }}{{ $.user }}{{ end }}"),
        "vxapp"
    );
    assert_eq!(ok("{{ (.json | fromJson).b }}"), "2");
    assert_eq!(ok("{{ (.json | fromJson).null }}"), "<no value>");
    assert_eq!(ok("{{ (.json | fromJson).list }}"), "[1 two true]");
    assert_eq!(ok("{{ (.json | fromJson).nested }}"), "map[k:v]");
    assert!(matches!(
        render("{{ .user.name }}", VALUES),
        Err(TemplateError::Execute { .. })
    ));
}

#[test]
fn variables_with_go_scoping() {
    assert_eq!(ok("{{ $x := .user }}{{ $x }}"), "app");
    assert_eq!(ok("{{ $x := 1 }}{{ $x = 2 }}{{ $x }}"), "2");
    assert_eq!(
        ok("{{ $x := \"out\" }}{{ if true }}{{ $x := \"in\" }}{{ $x }}{{ end }}{{ $x }}"),
        "inout"
    );
    assert_eq!(
        ok("{{ $x := \"a\" }}{{ if true }}{{ $x = \"b\" }}{{ end }}{{ $x }}"),
        "b"
    );
    assert_eq!(ok("{{ if $v := .user }}{{ $v }}{{ end }}"), "app");
    let undefined = render("{{ if true }}{{ $y := 1 }}{{ end }}{{ $y }}", VALUES).unwrap_err();
    assert!(
        matches!(&undefined, TemplateError::Parse { message, .. } if message.contains("undefined variable \"$y\"")),
        "{undefined}"
    );
    assert!(matches!(
        render("{{ $z = 1 }}", VALUES),
        Err(TemplateError::Parse { .. })
    ));
}

#[test]
fn conditionals() {
    assert_eq!(ok("{{ if .user }}yes{{ else }}no{{ end }}"), "yes");
    assert_eq!(ok("{{ if .empty }}yes{{ else }}no{{ end }}"), "no");
    assert_eq!(
        ok("{{ if eq .user \"x\" }}1{{ else if eq .user \"app\" }}2{{ else }}3{{ end }}"),
        "2"
    );
    assert_eq!(
        ok("{{ if .empty }}1{{ else if .missing }}2{{ else if 0 }}3{{ else }}4{{ end }}"),
        "4"
    );
    assert_eq!(ok("{{ with .missing }}a{{ else }}b{{ end }}"), "b");
    assert_eq!(
        ok("{{ with .missing }}a{{ else with .user }}{{ . }}{{ end }}"),
        "app"
    );
    assert_eq!(ok("{{ if and .user (not .empty) }}t{{ end }}"), "t");
    assert_eq!(ok("{{ or .empty .missing \"z\" }}{{ and 1 0 2 }}"), "z0");
    // `and` and `or` stop evaluating once the answer is known, as in Go.
    assert_eq!(ok("{{ or .user (index 1 2) }}"), "app");
    assert_eq!(
        ok(
            "{{ if ne .user \"x\" }}{{ lt 1 2 }}{{ le 2 2 }}{{ gt \"b\" \"a\" }}{{ ge 1.5 2 }}{{ end }}"
        ),
        "truetruetruefalse"
    );
    assert_eq!(
        ok("{{ eq .user \"a\" \"app\" }}{{ eq 1 1.0 }}{{ eq .missing nil }}"),
        "truetruetrue"
    );
    assert!(matches!(
        render("{{ eq .user 1 }}", VALUES),
        Err(TemplateError::Execute { .. })
    ));
}

#[test]
fn range_over_maps_lists_and_numbers() {
    let values = &[("b", "2"), ("a", "1"), ("c", "3")];
    assert_eq!(
        render("{{ range $k, $v := . }}{{ $k }}={{ $v }};{{ end }}", values).unwrap(),
        "a=1;b=2;c=3;"
    );
    assert_eq!(
        render("{{ range . }}{{ . }}{{ end }}", values).unwrap(),
        "123"
    );
    assert_eq!(
        ok("{{ range $i, $v := (.json | fromJson).list }}{{ $i }}:{{ $v }} {{ end }}"),
        "0:1 1:two 2:true "
    );
    assert_eq!(
        ok("{{ range $v := (.json | fromJson).list }}{{ $v }}{{ end }}"),
        "1twotrue"
    );
    assert_eq!(ok("{{ range .missing }}x{{ else }}none{{ end }}"), "none");
    assert_eq!(ok("{{ range 3 }}{{ . }}{{ end }}"), "012");
    assert_eq!(
        ok(
            "{{ range $i, $v := (.json | fromJson).list }}{{ if eq $i 1 }}{{ continue }}{{ end }}{{ if eq $i 2 }}{{ break }}{{ end }}{{ $v }}{{ end }}"
        ),
        "1"
    );
    assert_eq!(
        ok("{{ range $k, $v := split \",\" \"a,b\" }}{{ $k }}{{ $v }}{{ end }}"),
        "_0a_1b"
    );
    let outside = render("{{ break }}", VALUES).unwrap_err();
    assert!(
        matches!(&outside, TemplateError::Parse { message, .. } if message.contains("outside"))
    );
    assert!(matches!(
        render("{{ range .user }}{{ end }}", VALUES),
        Err(TemplateError::Execute { .. })
    ));
}

#[test]
fn literals_and_builtins() {
    assert_eq!(
        ok(r#"{{ "a\tb" }}|{{ `raw\n` }}|{{ 'a' }}|{{ 0x10 }}|{{ 1.5 }}|{{ true }}"#),
        "a\tb|raw\\n|97|16|1.5|true"
    );
    assert_eq!(
        ok("{{ len .user }}{{ len (.json | fromJson) }}{{ len (.json | fromJson).list }}"),
        "353"
    );
    assert_eq!(
        ok("{{ index (.json | fromJson).list 1 }}{{ index (.json | fromJson) \"nested\" \"k\" }}"),
        "twov"
    );
    assert_eq!(
        ok("{{ print \"a\" 1 2 \"b\" }}|{{ println \"a\" 1 }}|"),
        "a1 2b|a 1\n|"
    );
    assert_eq!(
        ok(r#"{{ printf "%s:%d %q %x %v %5.1f|%-4s|" .user 42 "q" 255 .missing 3.25159 "ab" }}"#),
        "app:42 \"q\" ff <nil>   3.3|ab  |"
    );
    assert_eq!(ok("{{ .user | printf \"%s-%s\" \"x\" }}"), "x-app");
    assert_eq!(ok("{{ \"a b&c\" | urlquery }}"), "a+b%26c");
    assert!(matches!(
        render("{{ nil }}", VALUES),
        Err(TemplateError::Parse { .. })
    ));
    assert!(matches!(
        render("{{ .user .host }}", VALUES),
        Err(TemplateError::Parse { .. })
    ));
    assert!(matches!(
        render("{{ index (.json | fromJson).list 9 }}", VALUES),
        Err(TemplateError::Execute { .. })
    ));
}

#[test]
fn sprig_functions_keep_their_behaviour() {
    assert_eq!(
        ok("{{ toJson (.json | fromJson) }}"),
        r#"{"a":"x","b":2,"list":[1,"two",true],"nested":{"k":"v"},"null":null}"#
    );
    assert_eq!(
        ok("{{ .user | squote }} {{ quote .user .host }}"),
        r#"'app' "app" "db.internal""#
    );
    assert_eq!(
        ok("{{ \"a.b.c\" | trimPrefix \"a.\" | trimSuffix \".c\" | upper }}"),
        "B"
    );
    assert_eq!(
        ok("{{ contains \"pp\" .user }}{{ hasPrefix \"a\" .user }}{{ hasSuffix \"x\" .user }}"),
        "truetruefalse"
    );
    assert_eq!(
        ok("{{ \"a b\\tc\" | nospace }}|{{ \"x\\ny\" | indent 2 }}"),
        "abc|  x\n  y"
    );
    assert_eq!(
        ok("{{ join \",\" (.json | fromJson).list }}|{{ toString 5 }}"),
        "1,two,true|5"
    );
    assert_eq!(
        ok("{{ coalesce .empty .missing .user }}{{ empty .empty }}{{ .empty | default \"d\" }}"),
        "apptrued"
    );
    assert_eq!(
        ok("{{ \"ÀB\" | lower }}{{ \"straße\" | upper }}"),
        "àbSTRASSE"
    );
    assert_eq!(
        ok("{{ \"aGk=\" | b64dec }}{{ \"aGk=\" | b64dec | b64enc }}"),
        "hiaGk="
    );
    // Bytes that are not UTF-8 print as U+FFFD, as Go's string(b) would.
    assert_eq!(ok("{{ \"/w==\" | b64dec }}"), "\u{fffd}");
}

#[test]
fn define_template_and_block_stay_refused() {
    for (text, keyword) in [
        ("{{ define \"x\" }}{{ end }}", "\"define\""),
        ("{{ template \"x\" }}", "\"template\""),
        ("{{- block \"b\" . }}{{ end }}", "\"block\""),
    ] {
        let error = render(text, &[]).unwrap_err();
        assert!(
            matches!(&error, TemplateError::Parse { message, .. } if message.contains(keyword) && message.contains("not supported")),
            "{text}: {error}"
        );
    }
}

/// A chain of `replace` multiplies the size per stage (10, 100, 10^4, 10^8 bytes); the old
/// engine built every stage in full and only measured the output (`len` keeps the output tiny,
/// so it rendered the 10^8 bytes happily, and one stage more exhausts memory).
#[test]
fn intermediate_strings_are_bounded_while_they_grow() {
    let mut template = String::from("{{ $a := \"xxxxxxxxxx\" }}");
    let names = ["a", "b", "c", "d"];
    for pair in names.windows(2) {
        template.push_str(&format!(
            "{{{{ ${} := replace \"x\" ${} ${} }}}}",
            pair[1], pair[0], pair[0]
        ));
    }
    template.push_str("{{ len $d }}");
    let error = render(&template, &[]).unwrap_err();
    assert_eq!(
        error,
        TemplateError::TooLarge {
            key: "out".into(),
            limit: MAX_OUTPUT_BYTES
        }
    );
    assert!(
        error.to_string().contains("\"out\"")
            && error.to_string().contains(&MAX_OUTPUT_BYTES.to_string())
    );
    // Below the limit the same chain works.
    let fits = "{{ $a := \"xxxxxxxxxx\" }}{{ $b := replace \"x\" $a $a }}{{ $c := replace \"x\" $b $b }}{{ len $c }}";
    assert_eq!(render(fits, &[]).unwrap(), "10000");
    // The same for other growing functions, and for the output while it is written.
    let big = "y".repeat(MAX_OUTPUT_BYTES / 2 + 1);
    for template in [
        "{{ $x := printf \"%s%s\" .big .big }}",
        "{{ $x := .big | b64enc | b64enc | b64enc }}",
        "{{ $x := .big | replace \"y\" \"yy\" | len }}",
        "{{ $x := quote .big .big }}",
        "{{ $x := toJson (split \"y\" .big) }}",
        "{{ $x := printf \"%1000000d%1000000d\" 1 2 }}",
        "{{ .big }}{{ .big }}",
        "{{ range 3 }}{{ $.big }}{{ end }}",
    ] {
        assert_eq!(
            render(template, &[("big", &big)]).unwrap_err(),
            TemplateError::TooLarge {
                key: "out".into(),
                limit: MAX_OUTPUT_BYTES
            },
            "{template}"
        );
    }
}

/// Three nested ranges over a thousand entries are 10^9 iterations that print nothing: the old
/// engine ran them all.
#[test]
fn nested_ranges_run_out_of_steps() {
    let template = "{{ $s := replace \"x\" \"x,x,x,x,x,x,x,x,x,x\" \"x\" }}\
        {{ $s = replace \"x\" \"x,x,x,x,x,x,x,x,x,x\" $s }}\
        {{ $s = replace \"x\" \"x,x,x,x,x,x,x,x,x,x\" $s }}\
        {{ $m := split \",\" $s }}\
        {{ range $m }}{{ range $m }}{{ range $m }}{{ end }}{{ end }}{{ end }}";
    let error = render(template, &[]).unwrap_err();
    assert_eq!(
        error,
        TemplateError::TooManySteps {
            key: "out".into(),
            limit: MAX_STEPS
        }
    );
    assert!(error.to_string().contains(&MAX_STEPS.to_string()));
    // Big work in few steps is paid by the byte: a million replacements of a large string.
    let big = "z".repeat(MAX_OUTPUT_BYTES / 2);
    assert!(matches!(
        render(
            "{{ range 1000000 }}{{ $x := replace \"z\" \"w\" $.big }}{{ end }}",
            &[("big", &big)]
        ),
        Err(TemplateError::TooManySteps { .. })
    ));
}

#[test]
fn nesting_is_limited_in_the_parser() {
    for (open, close) in [
        ("{{ if true }}", "{{ end }}"),
        ("{{ range 1 }}", "{{ end }}"),
        ("{{ with 1 }}", "{{ end }}"),
    ] {
        let fits = format!("{}x{}", open.repeat(MAX_NESTING), close.repeat(MAX_NESTING));
        assert_eq!(render(&fits, &[]).unwrap(), "x");
        let deep = format!(
            "{}x{}",
            open.repeat(MAX_NESTING + 1),
            close.repeat(MAX_NESTING + 1)
        );
        let error = render(&deep, &[]).unwrap_err();
        assert!(
            matches!(&error, TemplateError::Parse { message, .. } if message.contains("nest deeper than 64")),
            "{error}"
        );
    }
    let parens = |n: usize| format!("{{{{ {}1{} }}}}", "(".repeat(n), ")".repeat(n));
    assert_eq!(render(&parens(MAX_NESTING), &[]).unwrap(), "1");
    let error = render(&parens(100_000), &[]).unwrap_err();
    assert!(
        matches!(&error, TemplateError::Parse { message, .. } if message.contains("nest deeper"))
    );
    // A long else-if chain is one level, not one per arm.
    let chain = format!(
        "{{{{ if false }}}}{}{{{{ else }}}}last{{{{ end }}}}",
        "{{ else if false }}x".repeat(500)
    );
    assert_eq!(render(&chain, &[]).unwrap(), "last");
}

#[test]
fn multibyte_characters_in_actions_are_errors_not_panics() {
    for text in [
        "{{ € }}",
        "{{€}}",
        "{{ .a€ }}",
        "{{ $€ }}",
        "{{ 1€ }}",
        "{{- € -}}",
        "{{ \"€",
        "{{ é",
        "{{ printf \"%€\" }}é{{",
        "{{ 'é",
        "{{/* € ",
        "{{ .x }}€{{ ü",
    ] {
        let error = render(text, &[("x", "1")]).unwrap_err();
        assert!(
            matches!(error, TemplateError::Parse { .. }),
            "{text:?}: {error}"
        );
    }
    assert_eq!(render("{{ printf \"%€\" }}", &[]).unwrap(), "%!€(MISSING)");
    assert_eq!(render("{{ \"€\" }}{{ '€' }}", &[]).unwrap(), "€8364");
    assert_eq!(render("{{ index . \"ü\" }}", &[("ü", "u")]).unwrap(), "u");
}

#[test]
fn an_action_left_open_is_a_parse_error() {
    for text in [
        "{{",
        "{{ .a",
        "{{ if .a }}",
        "{{ range . }}x",
        "{{ (.a",
        "{{ \"x",
        "{{ `x",
        "{{ .a | ",
        "a {{- ",
    ] {
        let error = render(text, &[]).unwrap_err();
        assert!(
            matches!(error, TemplateError::Parse { .. }),
            "{text:?}: {error}"
        );
    }
    assert!(matches!(
        render("{{ end }}", &[]),
        Err(TemplateError::Parse { .. })
    ));
    assert!(matches!(
        render("{{ else }}", &[]),
        Err(TemplateError::Parse { .. })
    ));
}

#[test]
fn execution_errors_never_echo_values() {
    let secret = "s3cr3t-value";
    for text in [
        "{{ .p | b64dec }}",
        "{{ .p | fromJson }}",
        "{{ .p.x }}",
        "{{ index .p 99 }}",
        "{{ lt .p 1 }}",
        "{{ range .p }}{{ end }}",
        "{{ $x := replace \"\" .p .p }}{{ $x = replace \"\" $x $x }}{{ $x = replace \"\" $x $x }}{{ $x = replace \"\" $x $x }}",
    ] {
        let error = render(text, &[("p", secret)]).unwrap_err();
        assert!(!error.to_string().contains("s3cr3t"), "{text}: {error}");
        assert!(
            !format!("{error:?}").contains("s3cr3t"),
            "{text}: {error:?}"
        );
    }
}

/// A small, fixed-seed generator of inputs: fragments of template syntax, multibyte characters
/// and noise, glued at random. Nothing may panic, and everything ends within the budget.
#[test]
fn generated_inputs_never_panic() {
    const FRAGMENTS: &[&str] = &[
        "{{",
        "}}",
        "{{-",
        "-}}",
        "{{- ",
        " -}}",
        " ",
        "\n",
        ".",
        ".a",
        ".b.c",
        "$",
        "$x",
        "$y",
        ":=",
        "=",
        "|",
        "(",
        ")",
        ",",
        "\"s\"",
        "\"%s %d %q %x %5.2f %-3v %*d\"",
        "`r`",
        "'c'",
        "'\\n'",
        "\"\\u00e9\\x41\"",
        "1",
        "-1.5e3",
        "0x1f",
        "if",
        "else",
        "end",
        "range",
        "with",
        "break",
        "continue",
        "define",
        "nil",
        "true",
        "and",
        "or",
        "not",
        "len",
        "index",
        "printf",
        "print",
        "println",
        "eq",
        "lt",
        "upper",
        "replace",
        "split",
        "join",
        "toJson",
        "fromJson",
        "b64enc",
        "b64dec",
        "indent",
        "default",
        "quote",
        "urlquery",
        "sha256sum",
        "é",
        "€",
        "😀",
        "/*",
        "*/",
        "\\",
        "\"",
        "`",
        "'",
        "{",
        "}",
        "-",
        "%",
        "a",
        "0",
        "{{ range $i, $v := . }}",
        "{{ end }}",
        "{{ if . }}",
        "{{ else }}",
        "{{ .json | fromJson }}",
        "{{ $x := . }}",
    ];
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        // xorshift64*
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    let values = &[("a", "1"), ("b", "é€"), ("json", "{\"c\":[1,2]}")];
    let mut parsed = 0;
    for _ in 0..20_000 {
        let pieces = 1 + (next() % 24) as usize;
        let mut text = String::new();
        for _ in 0..pieces {
            if next() % 10 == 0 {
                // A random character, multibyte often.
                let c = char::from_u32((next() % 0x2_0000) as u32).unwrap_or('\u{fffd}');
                text.push(c);
            } else {
                text.push_str(FRAGMENTS[(next() % FRAGMENTS.len() as u64) as usize]);
            }
        }
        if render(&text, values).is_ok() {
            parsed += 1;
        }
    }
    // The generator reaches the executor, not only the parser's error paths.
    assert!(parsed > 1_000, "only {parsed} inputs rendered");
}

#[test]
fn variables_in_scope_are_limited() {
    let many = |n: usize| {
        let mut text = String::new();
        for i in 0..n {
            text.push_str(&format!("{{{{ $v{i} := {i} }}}}"));
        }
        text.push_str("{{ $v0 }}");
        text
    };
    assert_eq!(render(&many(crate::MAX_VARIABLES - 1), &[]).unwrap(), "0");
    let error = render(&many(crate::MAX_VARIABLES), &[]).unwrap_err();
    assert!(
        matches!(&error, TemplateError::Parse { message, .. } if message.contains("variables in scope")),
        "{error}"
    );
    // Scopes that end give their variables back.
    let scoped =
        "{{ range 2 }}{{ $x := . }}{{ end }}{{ if true }}{{ $y := 1 }}{{ end }}".repeat(600);
    assert!(render(&scoped, &[]).is_ok());
}
