// pgjdbc (Debian's libpostgresql-jdbc-java) against a PostgreSQL server: DatabaseMetaData's
// getTables, getColumns and getPrimaryKeys, and a prepared SELECT with a bound parameter.
// Run with Java's single-file source launcher, no build step:
//
//   java -cp /usr/share/java/postgresql.jar JdbcMeta.java JDBC_URL USER PASSWORD TABLE KEYED [--create | OTHER...]
//
// TABLE has columns day, region, channel, units, amount, since; KEYED declares a key.
// With --create (against a real PostgreSQL) both tables are created first, KEYED with the
// primary key (region, day, channel), and dropped at the end. getPrimaryKeys is also asked
// for each OTHER table. Prints one JSON report.

import java.sql.*;
import java.util.*;

public class JdbcMeta {
    static StringBuilder out = new StringBuilder();

    static String q(String s) {
        if (s == null) return "null";
        StringBuilder b = new StringBuilder("\"");
        for (char c : s.toCharArray()) {
            if (c == '"' || c == '\\') b.append('\\').append(c);
            else if (c < 0x20) b.append(String.format("\\u%04x", (int) c));
            else b.append(c);
        }
        return b.append('"').toString();
    }

    /** The result set's columns as [[label, java.sql.Types code, type name], ...]. */
    static String shape(ResultSetMetaData md) throws SQLException {
        List<String> cols = new ArrayList<>();
        for (int i = 1; i <= md.getColumnCount(); i++) {
            cols.add("[" + q(md.getColumnLabel(i)) + "," + md.getColumnType(i) + "," + q(md.getColumnTypeName(i)) + "]");
        }
        return "[" + String.join(",", cols) + "]";
    }

    /** Rows as lists of strings, only the named columns. */
    static String rows(ResultSet rs, String... names) throws SQLException {
        List<String> rows = new ArrayList<>();
        while (rs.next()) {
            List<String> r = new ArrayList<>();
            for (String n : names) r.add(q(rs.getString(n)));
            rows.add("[" + String.join(",", r) + "]");
        }
        return "[" + String.join(",", rows) + "]";
    }

    public static void main(String[] a) throws Exception {
        String url = a[0], user = a[1], password = a[2], table = a[3], keyed = a[4];
        boolean create = a.length > 5 && a[5].equals("--create");
        List<String> pkTables = new ArrayList<>(List.of(table, keyed));
        if (!create) pkTables.addAll(Arrays.asList(a).subList(5, a.length));
        Properties props = new Properties();
        props.setProperty("user", user);
        props.setProperty("password", password);
        List<String> report = new ArrayList<>();
        try (Connection conn = DriverManager.getConnection(url, props)) {
            String cols = "day date, region text, channel text, units bigint, amount double precision, since date";
            if (create) {
                try (Statement st = conn.createStatement()) {
                    st.execute("CREATE TABLE " + table + " (" + cols + ")");
                    st.execute("CREATE TABLE " + keyed + " (" + cols + ", PRIMARY KEY (region, day, channel))");
                }
            }
            try {
                DatabaseMetaData md = conn.getMetaData();
                report.add("\"product\":" + q(md.getDatabaseProductName() + " " + md.getDatabaseProductVersion()));
                report.add("\"driver\":" + q(md.getDriverName() + " " + md.getDriverVersion()));

                try (ResultSet rs = md.getTables(null, "public", "%", new String[] {"TABLE"})) {
                    report.add("\"tables_shape\":" + shape(rs.getMetaData()));
                    report.add("\"tables\":" + rows(rs, "TABLE_SCHEM", "TABLE_NAME", "TABLE_TYPE"));
                }
                try (ResultSet rs = md.getColumns(null, "public", table, "%")) {
                    report.add("\"columns_shape\":" + shape(rs.getMetaData()));
                    report.add("\"columns\":" + rows(rs, "TABLE_NAME", "COLUMN_NAME", "DATA_TYPE", "TYPE_NAME", "ORDINAL_POSITION", "NULLABLE"));
                }
                List<String> pks = new ArrayList<>();
                for (String t : pkTables) {
                    try (ResultSet rs = md.getPrimaryKeys(null, "public", t)) {
                        if (t.equals(table)) report.add("\"pk_shape\":" + shape(rs.getMetaData()));
                        pks.add(q(t) + ":" + rows(rs, "TABLE_NAME", "COLUMN_NAME", "KEY_SEQ", "PK_NAME"));
                    }
                }
                report.add("\"pk\":{" + String.join(",", pks) + "}");

                // A prepared statement whose parameter the WHERE clause pushes down. pgjdbc
                // switches to a named server-side statement after prepareThreshold (5) runs.
                List<String> runs = new ArrayList<>();
                try (PreparedStatement ps = conn.prepareStatement(
                        "select count(*) as n, min(region) as lo, max(region) as hi, sum(amount) as total from "
                                + table + " where region = ?")) {
                    for (String region : new String[] {"APAC", "EU", "APAC", "EU", "APAC", "EU", "APAC"}) {
                        ps.setString(1, region);
                        try (ResultSet rs = ps.executeQuery()) {
                            rs.next();
                            runs.add("{\"region\":" + q(region) + ",\"n\":" + rs.getLong("n") + ",\"lo\":"
                                    + q(rs.getString("lo")) + ",\"hi\":" + q(rs.getString("hi"))
                                    + ",\"total\":" + rs.getDouble("total") + "}");
                        }
                    }
                }
                report.add("\"prepared\":[" + String.join(",", runs) + "]");
            } finally {
                if (create) {
                    try (Statement st = conn.createStatement()) {
                        st.execute("DROP TABLE IF EXISTS " + table);
                        st.execute("DROP TABLE IF EXISTS " + keyed);
                    }
                }
            }
        }
        System.out.println("{" + String.join(",", report) + "}");
    }
}
