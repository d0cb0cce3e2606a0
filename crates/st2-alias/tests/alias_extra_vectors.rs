//! Extra parser vectors for rules the st2 fixture does not cover. Each expected outcome was
//! derived from StackStorm's `ActionAliasFormatParser` (st2 master) running on CPython 3.11's
//! `re`, and is checked here without Python. Outcome keys: `params` (object, or list for
//! `multiple`), `nomatch`/`novalue` (st2's two `ParseException`s), `invalid` (`re.error`).

use std::collections::BTreeMap;

use serde::Deserialize;
use st2_alias::{Format, FormatError, ParseError};

const VECTORS: &str = r###"[
 {
  "format": "foo",
  "command": "fo x=1 o x=1 ",
  "multiple": false,
  "expected": {
   "params": {
    "x": "1"
   }
  },
  "note": "extras run removed everywhere by str.replace (Python replaces all occurrences)"
 },
 {
  "format": "x y",
  "command": "x a=1 y a=1",
  "multiple": false,
  "expected": {
   "params": {
    "a": "1"
   }
  },
  "note": "the trailing run ' a=1' also occurs mid-command and is removed there too"
 },
 {
  "format": "run {{cmd}}",
  "command": "run date\n",
  "multiple": false,
  "expected": {
   "params": {
    "cmd": "date"
   }
  },
  "note": "ending regex: $ matches before a final newline"
 },
 {
  "format": "run {{cmd}}",
  "command": "run date k=v\n",
  "multiple": false,
  "expected": {
   "params": {
    "cmd": "date",
    "k": "v"
   }
  },
  "note": "extra before a final newline"
 },
 {
  "format": "run {{cmd}}",
  "command": "run date k=\"a b\" j='c d' m={x} n=",
  "multiple": false,
  "expected": {
   "params": {
    "cmd": "date k=\"a b\" j='c d' m={x} n="
   }
  },
  "note": "mixed extras; 'n=' is not a pair so nothing is cut"
 },
 {
  "format": "run {{cmd}}",
  "command": "run date k=\"\" j=''",
  "multiple": false,
  "expected": {
   "params": {
    "cmd": "date",
    "k": "",
    "j": ""
   }
  },
  "note": "empty quoted extras"
 },
 {
  "format": "run {{cmd}}",
  "command": "run date k=\"a\"b",
  "multiple": false,
  "expected": {
   "params": {
    "cmd": "date",
    "k": "a"
   }
  },
  "note": "the ending regex takes \"a\"b as one \\S+ value, but findall re-reads the run and keeps \"a\": the trailing b is lost"
 },
 {
  "format": "run {{cmd}}",
  "command": "run date {k}=v",
  "multiple": false,
  "expected": {
   "params": {
    "cmd": "date",
    "{k}": "v"
   }
  },
  "note": "key with braces"
 },
 {
  "format": "run {{cmd}}",
  "command": "run date k=v",
  "multiple": false,
  "expected": {
   "params": {
    "cmd": "date",
    "k": "v"
   }
  },
  "note": "NBSP is \\s for Python, so it separates an extra"
 },
 {
  "format": "run {{cmd}}",
  "command": "run date k=v",
  "multiple": false,
  "expected": {
   "params": {
    "cmd": "date",
    "k": "v"
   }
  },
  "note": "EM SPACE is \\s too"
 },
 {
  "format": "run {{ cmd = \"a b\" }}",
  "command": "run",
  "multiple": false,
  "expected": {
   "params": {
    "cmd": "a b"
   }
  },
  "note": "quoted default with spaces"
 },
 {
  "format": "run {{ cmd = 'a b' }}",
  "command": "run",
  "multiple": false,
  "expected": {
   "params": {
    "cmd": "a b"
   }
  },
  "note": "single-quoted default"
 },
 {
  "format": "run {{cmd={\"k\": [1, 2]}}}",
  "command": "run",
  "multiple": false,
  "expected": {
   "params": {
    "cmd": "{\"k\": [1, 2]}"
   }
  },
  "note": "brace default up to the first }"
 },
 {
  "format": "run {{cmd=''}}",
  "command": "run",
  "multiple": false,
  "expected": {
   "params": {
    "cmd": ""
   }
  },
  "note": "default of two single quotes"
 },
 {
  "format": "run {{cmd=x}} {{b}}",
  "command": "run  y",
  "multiple": false,
  "expected": {
   "params": {
    "cmd": "x",
    "b": " y"
   }
  },
  "note": "two spaces: the optional group's literal space plus the param"
 },
 {
  "format": "go {{a=x\ny}}",
  "command": "go",
  "multiple": false,
  "expected": {
   "nomatch": true
  },
  "note": "default with a line break: not rewritten (non-DOTALL re.sub), no match"
 },
 {
  "format": "go {{ a }}",
  "command": "go 'quoted value'",
  "multiple": false,
  "expected": {
   "params": {
    "a": "quoted value"
   }
  },
  "note": "single quotes stripped"
 },
 {
  "format": "go {{ a }}",
  "command": "go \"x\" \"y\"",
  "multiple": false,
  "expected": {
   "params": {
    "a": "x\" \"y"
   }
  },
  "note": "only the outer quotes are optional-stripped"
 },
 {
  "format": "go {{a}} {{b}}",
  "command": "go {x} {y}",
  "multiple": false,
  "expected": {
   "params": {
    "a": "{x}",
    "b": "{y}"
   }
  },
  "note": "brace-delimited values"
 },
 {
  "format": "go {{a}}",
  "command": "go {x",
  "multiple": false,
  "expected": {
   "params": {
    "a": "{x"
   }
  },
  "note": "unbalanced brace is plain text"
 },
 {
  "format": "\\Ago {{a}}",
  "command": "go x",
  "multiple": false,
  "expected": {
   "nomatch": true
  },
  "note": "\\A counts as a begin anchor: no ^\\s* added, so the padding space blocks the match"
 },
 {
  "format": "\\A\\s*go {{a}}",
  "command": "go x",
  "multiple": false,
  "expected": {
   "params": {
    "a": "x"
   }
  },
  "note": "\\A with explicit \\s*"
 },
 {
  "format": "go {{a}}\\Z",
  "command": "go x",
  "multiple": false,
  "expected": {
   "params": {
    "a": "x "
   }
  },
  "note": "\\Z counts as an end anchor; the padding space is captured"
 },
 {
  "format": "(?:a|^|b)go {{x}}",
  "command": "zz bgo y",
  "multiple": false,
  "expected": {
   "params": {
    "x": "y"
   }
  },
  "note": "st2 inspects the second alternative only: ^ found there, so no ^\\s* is added"
 },
 {
  "format": "(?:a|b|^)go {{x}}",
  "command": "zz bgo y",
  "multiple": false,
  "expected": {
   "nomatch": true
  },
  "note": "^ in the third alternative is not seen: ^\\s* is prepended"
 },
 {
  "format": "(?m:^)go {{x}}",
  "command": "go y",
  "multiple": false,
  "expected": {
   "nomatch": true
  },
  "note": "scoped multiline ^ still counts as an anchor: no ^\\s* is added and the padding space blocks the match"
 },
 {
  "format": "(?:go)? {{x}}",
  "command": "",
  "multiple": false,
  "expected": {
   "params": {
    "x": " "
   }
  },
  "note": "empty command, required param captures nothing but padding"
 },
 {
  "format": "(?:go)?",
  "command": " ",
  "multiple": false,
  "expected": {
   "novalue": true
  },
  "note": "whitespace-only command and a format matching nothing: no value"
 },
 {
  "format": "(?:go)?",
  "command": "k=v",
  "multiple": false,
  "expected": {
   "params": {
    "k": "v"
   }
  },
  "note": "only extras: the extras supply a value"
 },
 {
  "format": "(?:go)?",
  "command": "k=",
  "multiple": false,
  "expected": {
   "nomatch": true
  },
  "note": "'k=' is not a pair: the command does not match"
 },
 {
  "format": "(?P<n>a)?{{x}}",
  "command": "zz",
  "multiple": false,
  "expected": {
   "params": {
    "n": null,
    "x": "zz"
   }
  },
  "note": "a user group that did not take part is null"
 },
 {
  "format": "(?P<n>[0-9]+) items?",
  "command": "12 item",
  "multiple": false,
  "expected": {
   "params": {
    "n": "12"
   }
  },
  "note": "user named group only"
 },
 {
  "format": "(?i:deploy) {{app}}",
  "command": "DePlOy web",
  "multiple": false,
  "expected": {
   "params": {
    "app": "web"
   }
  },
  "note": "scoped ignorecase"
 },
 {
  "format": "(?x)^\\s* go \\s+ {{a}}",
  "command": "go x",
  "multiple": false,
  "expected": {
   "params": {
    "a": "x"
   }
  },
  "note": "verbose mode with an explicit anchor (placeholder text parsed in verbose mode)"
 },
 {
  "format": "(?i)^\\s*run {{a}}",
  "command": "RUN x",
  "multiple": false,
  "expected": {
   "params": {
    "a": "x"
   }
  },
  "note": "global flag at the very start is allowed when st2 adds no prefix"
 },
 {
  "format": "^(?i)run {{a}}",
  "command": "run x",
  "multiple": false,
  "expected": {
   "invalid": true
  },
  "note": "global flag after ^ is an error"
 },
 {
  "format": "run {{a}}++",
  "command": "run x",
  "multiple": false,
  "expected": {
   "invalid": true
  },
  "note": "quantifier after the placeholder's optional quote: multiple repeat"
 },
 {
  "format": "run {{a}}?",
  "command": "run x",
  "multiple": false,
  "expected": {
   "params": {
    "a": "x"
   }
  },
  "note": "? after the placeholder makes its closing quote lazy"
 },
 {
  "format": "run [{{a}}]",
  "command": "run b",
  "multiple": false,
  "expected": {
   "nomatch": true
  },
  "note": "placeholder inside a set: compiles as a strange set"
 },
 {
  "format": "run \\{{a}}",
  "command": "run x",
  "multiple": false,
  "expected": {
   "nomatch": true
  },
  "note": "escaped placeholder brace"
 },
 {
  "format": "(run) {{a}} \\1",
  "command": "run x run",
  "multiple": false,
  "expected": {
   "params": {
    "a": "x"
   }
  },
  "note": "back-reference to a user group"
 },
 {
  "format": "(a)?(?(1)b|c) {{x}}",
  "command": "c y",
  "multiple": false,
  "expected": {
   "params": {
    "x": "y"
   }
  },
  "note": "conditional group"
 },
 {
  "format": "(?>run|running) {{x}}",
  "command": "running y",
  "multiple": false,
  "expected": {
   "nomatch": true
  },
  "note": "atomic group: 'run' is committed, the space then fails"
 },
 {
  "format": "run {{x}}*+",
  "command": "run y",
  "multiple": false,
  "expected": {
   "invalid": true
  },
  "note": "possessive quantifier on the closing quote is multiple repeat"
 },
 {
  "format": "(?<=a)b {{x}}",
  "command": "ab y",
  "multiple": false,
  "expected": {
   "nomatch": true
  },
  "note": "lookbehind before the implicit ^\\s*"
 },
 {
  "format": "go {{größe}}",
  "command": "go 5",
  "multiple": false,
  "expected": {
   "params": {
    "größe": "5"
   }
  },
  "note": "Unicode group name is a valid identifier"
 },
 {
  "format": "go {{ bad-name = 1 }}",
  "command": "go",
  "multiple": false,
  "expected": {
   "invalid": true
  },
  "note": "invalid name in a defaulted placeholder"
 },
 {
  "format": "go {{1}}",
  "command": "go x",
  "multiple": false,
  "expected": {
   "invalid": true
  },
  "note": "digit-only name"
 },
 {
  "format": "go {{a}} {{b=1}} {{a=2}}",
  "command": "go x",
  "multiple": false,
  "expected": {
   "invalid": true
  },
  "note": "duplicate name between required and optional placeholders"
 },
 {
  "format": "{{a}}",
  "command": "",
  "multiple": false,
  "expected": {
   "params": {
    "a": " "
   }
  },
  "note": "format that is only a param, empty command"
 },
 {
  "format": "{{a=}}{{b}}",
  "command": "x",
  "multiple": false,
  "expected": {
   "params": {
    "a": "x"
   }
  },
  "note": "an empty default swallows the next placeholder as its default text"
 },
 {
  "format": "ticket (?P<id>[0-9]+)",
  "command": "ticket 1 ticket 2",
  "multiple": true,
  "expected": {
   "params": []
  },
  "note": "implicit ^\\s* and \\s*$ make the whole command one ticket: no hit"
 },
 {
  "format": "(?:\\b|^)t(?P<id>[0-9]*)",
  "command": "t t1 t",
  "multiple": true,
  "expected": {
   "params": [
    {
     "id": ""
    }
   ]
  },
  "note": "no end anchor, so \\s*$ is appended: only the last t matches"
 },
 {
  "format": "(?:\\b|^)x*",
  "command": "axb",
  "multiple": true,
  "expected": {
   "params": [
    {}
   ]
  },
  "note": "\\s*$ is appended: a single empty hit at the end"
 },
 {
  "format": "(?:\\b|^)ticket (?P<id>[0-9]+)(?:\\b|$)",
  "command": "",
  "multiple": true,
  "expected": {
   "params": []
  },
  "note": "match_multiple on an empty command"
 }
]"###;

#[derive(Debug, Deserialize)]
struct Vector {
    format: String,
    command: String,
    multiple: bool,
    expected: serde_json::Value,
    note: String,
}

fn outcome(v: &Vector) -> serde_json::Value {
    let format = match Format::compile(&v.format) {
        Ok(f) => f,
        Err(FormatError::InvalidRegex { .. }) => return serde_json::json!({"invalid": true}),
        Err(e) => return serde_json::json!({"unexpected": e.to_string()}),
    };
    let result = if v.multiple {
        format
            .parse_multiple(&v.command)
            .map(|list| serde_json::json!({ "params": list }))
    } else {
        format
            .parse(&v.command)
            .map(|p| serde_json::json!({ "params": p }))
    };
    match result {
        Ok(value) => value,
        Err(ParseError::NoMatch { .. }) => serde_json::json!({"nomatch": true}),
        Err(ParseError::NoValue) => serde_json::json!({"novalue": true}),
        Err(ParseError::MissingGroup { .. }) => serde_json::json!({"keyerror": true}),
        Err(e) => serde_json::json!({"unexpected": e.to_string()}),
    }
}

#[test]
fn extra_vectors_follow_st2_and_python() {
    let vectors: Vec<Vector> = serde_json::from_str(VECTORS).expect("embedded vectors parse");
    let mut failures = Vec::new();
    for v in &vectors {
        let got = outcome(v);
        // Compare as maps so that key order (Python dict order vs sorted) does not matter.
        let normalise = |value: &serde_json::Value| -> serde_json::Value {
            serde_json::from_str::<BTreeMap<String, serde_json::Value>>(&value.to_string())
                .map_or(value.clone(), |m| {
                    serde_json::to_value(m).unwrap_or_default()
                })
        };
        if normalise(&got) != normalise(&v.expected) {
            failures.push(format!(
                "format {:?} command {:?} ({})\n    expected {}\n    actual   {}",
                v.format, v.command, v.note, v.expected, got
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} vectors differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
