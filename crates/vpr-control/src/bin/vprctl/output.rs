//! Human-readable output of vprctl: `key: value` lines for one object and
//! aligned tables for lists.

use serde_json::Value;

/// Prints `value` as indented `key: value` lines.
pub fn print_plain(value: &Value, indent: &str) {
    match value {
        Value::Object(fields) => {
            for (key, field) in fields {
                match field {
                    Value::Object(_) | Value::Array(_) => {
                        println!("{indent}{key}:");
                        print_plain(field, &format!("{indent}  "));
                    }
                    other => println!("{indent}{key}: {}", cell(other)),
                }
            }
        }
        Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                println!("{indent}- [{index}]");
                print_plain(item, &format!("{indent}  "));
            }
        }
        other => println!("{indent}{}", cell(other)),
    }
}

/// Prints `rows` (JSON objects) as a table of `columns`, one row a line.
pub fn print_table(rows: &[Value], columns: &[&str]) {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| columns.iter().map(|column| cell(&row[*column])).collect())
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(index, column)| {
            cells
                .iter()
                .map(|row| row[index].chars().count())
                .chain([column.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();

    let header: Vec<String> = columns.iter().map(|column| column.to_uppercase()).collect();
    print_row(&header, &widths);
    for row in &cells {
        print_row(row, &widths);
    }
}

fn print_row(cells: &[String], widths: &[usize]) {
    let line: Vec<String> = cells
        .iter()
        .zip(widths)
        .map(|(cell, width)| format!("{cell:<width$}"))
        .collect();
    println!("{}", line.join("  ").trim_end());
}

fn cell(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}
