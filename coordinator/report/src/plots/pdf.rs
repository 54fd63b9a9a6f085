//! A vector PDF backend for plotters: the figures a paper includes with `\includegraphics`,
//! drawn by the same code as the SVG and PNG ([`super::draw::figure`]).
//!
//! plotters ships no PDF backend, so this is one page written by hand (PDF 1.4): lines, paths,
//! rectangles, circles (four Bézier arcs) and polygons as path operators, transparency through
//! `ExtGState` opacities, and text in the same TrueType font the PNGs use (DejaVu Sans or
//! whichever [`super::ensure_font`] found), embedded whole and compressed, addressed by glyph id
//! (`Identity-H`) so that ε, ℓ, ∞ and ± print as they do in the SVG, with a `ToUnicode` map so
//! the text can be searched and copied. Coordinates: plotters' pixels (100 per inch, y down)
//! become PDF points (72 per inch, y up).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use ab_glyph::{Font as _, FontRef};
use plotters::style::FontTransform;
use plotters::style::text_anchor::{HPos, VPos};
use plotters_backend::{
    BackendColor, BackendCoord, BackendStyle, BackendTextStyle, DrawingBackend, DrawingErrorKind,
};

/// Drawing units per inch (as the SVG), and PDF points per unit.
const UNITS_PER_INCH: f64 = 100.0;
const PT: f64 = 72.0 / UNITS_PER_INCH;
/// plotters' font sizes are pixel heights of the whole line; the SVG divides by this to get a
/// CSS font size, and so does the PDF (same look).
const FONT_SIZE_RATIO: f64 = 1.24;

/// Why the page could not be written.
#[derive(Debug)]
pub struct PdfError(String);

impl std::fmt::Display for PdfError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PdfError {}

/// One page being drawn, written to `path` by `present`.
pub struct PdfBackend {
    path: PathBuf,
    size: (u32, u32),
    font_bytes: &'static [u8],
    font: FontRef<'static>,
    ops: String,
    /// Fill and stroke opacities in use, in percent (one `ExtGState` each).
    alphas: BTreeSet<u8>,
    /// Glyphs used, with the character each shows (for `ToUnicode`).
    glyphs: BTreeMap<u16, char>,
    written: bool,
}

impl PdfBackend {
    /// A page of `size` drawing units (100 per inch) to be written to `path`, its text in the
    /// TrueType font `font_bytes`.
    pub fn new(
        path: &Path,
        size: (u32, u32),
        font_bytes: &'static [u8],
    ) -> Result<PdfBackend, String> {
        let font =
            FontRef::try_from_slice(font_bytes).map_err(|e| format!("the figure font: {e}"))?;
        Ok(PdfBackend {
            path: path.to_owned(),
            size,
            font_bytes,
            font,
            ops: String::new(),
            alphas: BTreeSet::new(),
            glyphs: BTreeMap::new(),
            written: false,
        })
    }

    fn x(&self, x: i32) -> f64 {
        f64::from(x) * PT
    }

    fn y(&self, y: i32) -> f64 {
        (f64::from(self.size.1) - f64::from(y)) * PT
    }

    /// Sets the fill (`fill`) or stroke colour and opacity; false when fully transparent.
    fn set_color(&mut self, color: BackendColor, fill: bool) -> bool {
        if color.alpha <= 0.0 {
            return false;
        }
        let (r, g, b) = color.rgb;
        let c = |v: u8| f64::from(v) / 255.0;
        let op = if fill { "rg" } else { "RG" };
        let _ = writeln!(self.ops, "{:.4} {:.4} {:.4} {op}", c(r), c(g), c(b));
        let percent = (color.alpha.clamp(0.0, 1.0) * 100.0).round() as u8;
        self.alphas.insert(percent);
        let _ = writeln!(self.ops, "/A{percent} gs");
        true
    }

    fn stroke_style<S: BackendStyle>(&mut self, style: &S) -> bool {
        if !self.set_color(style.color(), false) {
            return false;
        }
        let width = f64::from(style.stroke_width().max(1)) * PT;
        let _ = writeln!(self.ops, "{width:.3} w 1 J 1 j");
        true
    }

    /// Sets up a fill (`fill`) or a stroke in `style`; false when there is nothing to draw.
    fn paint<S: BackendStyle>(&mut self, style: &S, fill: bool) -> bool {
        if fill {
            self.set_color(style.color(), true)
        } else {
            self.stroke_style(style)
        }
    }

    fn path_ops(&mut self, points: &[BackendCoord]) {
        for (i, &(x, y)) in points.iter().enumerate() {
            let op = if i == 0 { "m" } else { "l" };
            let _ = writeln!(self.ops, "{:.3} {:.3} {op}", self.x(x), self.y(y));
        }
    }

    /// Width of `text` at `size` font units, in drawing units.
    fn text_width(&self, text: &str, size: f64) -> f64 {
        let scale = size / self.units_per_em();
        text.chars()
            .map(|c| self.font.h_advance_unscaled(self.font.glyph_id(c)) as f64 * scale)
            .sum()
    }

    fn units_per_em(&self) -> f64 {
        f64::from(self.font.units_per_em().unwrap_or(1000.0))
    }

    /// The whole file.
    fn document(&self) -> Result<Vec<u8>, String> {
        let (w, h) = (f64::from(self.size.0) * PT, f64::from(self.size.1) * PT);
        let mut objects: Vec<Vec<u8>> = Vec::new();
        let upm = self.units_per_em();
        let per_mille = |units: f32| (f64::from(units) * 1000.0 / upm).round() as i64;
        // 1 catalog, 2 pages, 3 page, 4 content, 5 font, 6 CID font, 7 descriptor, 8 font file,
        // 9 ToUnicode, 10.. opacities.
        objects.push(b"<< /Type /Catalog /Pages 2 0 R >>".to_vec());
        objects.push(b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_vec());
        let gs: String = self
            .alphas
            .iter()
            .enumerate()
            .map(|(i, a)| format!("/A{a} {} 0 R ", 10 + i))
            .collect();
        objects.push(
            format!(
                "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {w:.2} {h:.2}] /Contents 4 0 R \
                 /Resources << /Font << /F1 5 0 R >> /ExtGState << {gs}>> >> >>"
            )
            .into_bytes(),
        );
        objects.push(stream("", &deflate(self.ops.as_bytes())));
        objects.push(
            b"<< /Type /Font /Subtype /Type0 /BaseFont /FigureFont /Encoding /Identity-H \
              /DescendantFonts [6 0 R] /ToUnicode 9 0 R >>"
                .to_vec(),
        );
        let widths: String = self
            .glyphs
            .keys()
            .map(|&g| {
                format!(
                    "{g} [{}] ",
                    per_mille(self.font.h_advance_unscaled(ab_glyph::GlyphId(g)))
                )
            })
            .collect();
        objects.push(
            format!(
                "<< /Type /Font /Subtype /CIDFontType2 /BaseFont /FigureFont \
                 /CIDSystemInfo << /Registry (Adobe) /Ordering (Identity) /Supplement 0 >> \
                 /FontDescriptor 7 0 R /CIDToGIDMap /Identity /DW 600 /W [{widths}] >>"
            )
            .into_bytes(),
        );
        let ascent = per_mille(self.font.ascent_unscaled());
        let descent = per_mille(self.font.descent_unscaled());
        objects.push(
            format!(
                "<< /Type /FontDescriptor /FontName /FigureFont /Flags 32 \
                 /FontBBox [-1000 {descent} 2000 {ascent}] /ItalicAngle 0 /Ascent {ascent} \
                 /Descent {descent} /CapHeight {ascent} /StemV 80 /FontFile2 8 0 R >>"
            )
            .into_bytes(),
        );
        objects.push(stream(
            &format!("/Length1 {}", self.font_bytes.len()),
            &deflate(self.font_bytes),
        ));
        let mut cmap = String::from(
            "/CIDInit /ProcSet findresource begin 12 dict begin begincmap \
             /CIDSystemInfo << /Registry (Adobe) /Ordering (UCS) /Supplement 0 >> def \
             /CMapName /Adobe-Identity-UCS def /CMapType 2 def \
             1 begincodespacerange <0000> <FFFF> endcodespacerange\n",
        );
        let entries: Vec<(&u16, &char)> = self.glyphs.iter().collect();
        for chunk in entries.chunks(100) {
            let _ = writeln!(cmap, "{} beginbfchar", chunk.len());
            for (g, c) in chunk {
                let mut units = [0u16; 2];
                let hex: String = c
                    .encode_utf16(&mut units)
                    .iter()
                    .map(|u| format!("{u:04X}"))
                    .collect();
                let _ = writeln!(cmap, "<{g:04X}> <{hex}>");
            }
            cmap.push_str("endbfchar\n");
        }
        cmap.push_str("endcmap CMapName currentdict /CMap defineresource pop end end");
        objects.push(stream("", &deflate(cmap.as_bytes())));
        for a in &self.alphas {
            let o = f64::from(*a) / 100.0;
            objects.push(format!("<< /Type /ExtGState /ca {o:.2} /CA {o:.2} >>").into_bytes());
        }

        let mut out: Vec<u8> = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n".to_vec();
        let mut offsets = Vec::with_capacity(objects.len());
        for (i, body) in objects.iter().enumerate() {
            offsets.push(out.len());
            out.extend_from_slice(format!("{} 0 obj\n", i + 1).as_bytes());
            out.extend_from_slice(body);
            out.extend_from_slice(b"\nendobj\n");
        }
        let xref = out.len();
        let mut table = format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1);
        for o in offsets {
            let _ = write!(table, "{o:010} 00000 n \n");
        }
        let _ = write!(
            table,
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        );
        out.extend_from_slice(table.as_bytes());
        Ok(out)
    }
}

/// A stream object with `extra` dictionary entries, its data Flate-compressed.
fn stream(extra: &str, compressed: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "<< /Length {} /Filter /FlateDecode {extra} >>\nstream\n",
        compressed.len()
    )
    .into_bytes();
    out.extend_from_slice(compressed);
    out.extend_from_slice(b"\nendstream");
    out
}

fn deflate(data: &[u8]) -> Vec<u8> {
    miniz_oxide::deflate::compress_to_vec_zlib(data, 6)
}

type Result2<T = ()> = Result<T, DrawingErrorKind<PdfError>>;

impl DrawingBackend for PdfBackend {
    type ErrorType = PdfError;

    fn get_size(&self) -> (u32, u32) {
        self.size
    }

    fn ensure_prepared(&mut self) -> Result2 {
        Ok(())
    }

    fn present(&mut self) -> Result2 {
        if self.written {
            return Ok(());
        }
        let bytes = self
            .document()
            .map_err(|e| DrawingErrorKind::DrawingError(PdfError(e)))?;
        std::fs::write(&self.path, bytes).map_err(|e| {
            DrawingErrorKind::DrawingError(PdfError(format!(
                "writing {}: {e}",
                self.path.display()
            )))
        })?;
        self.written = true;
        Ok(())
    }

    fn draw_pixel(&mut self, point: BackendCoord, color: BackendColor) -> Result2 {
        if self.set_color(color, true) {
            let _ = writeln!(
                self.ops,
                "{:.3} {:.3} {PT:.3} {PT:.3} re f",
                self.x(point.0),
                self.y(point.1) - PT
            );
        }
        Ok(())
    }

    fn draw_line<S: BackendStyle>(
        &mut self,
        from: BackendCoord,
        to: BackendCoord,
        style: &S,
    ) -> Result2 {
        if self.stroke_style(style) {
            self.path_ops(&[from, to]);
            self.ops.push_str("S\n");
        }
        Ok(())
    }

    fn draw_rect<S: BackendStyle>(
        &mut self,
        upper_left: BackendCoord,
        bottom_right: BackendCoord,
        style: &S,
        fill: bool,
    ) -> Result2 {
        if self.paint(style, fill) {
            let (x0, y0) = (self.x(upper_left.0), self.y(bottom_right.1));
            let (x1, y1) = (self.x(bottom_right.0), self.y(upper_left.1));
            let _ = writeln!(
                self.ops,
                "{x0:.3} {y0:.3} {:.3} {:.3} re {}",
                x1 - x0,
                y1 - y0,
                if fill { "f" } else { "S" }
            );
        }
        Ok(())
    }

    fn draw_path<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        path: I,
        style: &S,
    ) -> Result2 {
        let points: Vec<BackendCoord> = path.into_iter().collect();
        if points.len() >= 2 && self.stroke_style(style) {
            self.path_ops(&points);
            self.ops.push_str("S\n");
        }
        Ok(())
    }

    fn draw_circle<S: BackendStyle>(
        &mut self,
        center: BackendCoord,
        radius: u32,
        style: &S,
        fill: bool,
    ) -> Result2 {
        if self.paint(style, fill) {
            let (cx, cy, r) = (self.x(center.0), self.y(center.1), f64::from(radius) * PT);
            // Four cubic arcs; k places the control points of a quarter circle.
            let k = 0.552_284_75 * r;
            let _ = writeln!(
                self.ops,
                "{:.3} {cy:.3} m\n\
                 {:.3} {:.3} {:.3} {:.3} {cx:.3} {:.3} c\n\
                 {:.3} {:.3} {:.3} {:.3} {:.3} {cy:.3} c\n\
                 {:.3} {:.3} {:.3} {:.3} {cx:.3} {:.3} c\n\
                 {:.3} {:.3} {:.3} {:.3} {:.3} {cy:.3} c\n{}",
                cx + r,
                cx + r,
                cy + k,
                cx + k,
                cy + r,
                cy + r,
                cx - k,
                cy + r,
                cx - r,
                cy + k,
                cx - r,
                cx - r,
                cy - k,
                cx - k,
                cy - r,
                cy - r,
                cx + k,
                cy - r,
                cx + r,
                cy - k,
                cx + r,
                if fill { "f" } else { "S" }
            );
        }
        Ok(())
    }

    fn fill_polygon<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        vert: I,
        style: &S,
    ) -> Result2 {
        let points: Vec<BackendCoord> = vert.into_iter().collect();
        if points.len() >= 3 && self.set_color(style.color(), true) {
            self.path_ops(&points);
            self.ops.push_str("h f\n");
        }
        Ok(())
    }

    fn draw_text<TStyle: BackendTextStyle>(
        &mut self,
        text: &str,
        style: &TStyle,
        pos: BackendCoord,
    ) -> Result2 {
        if text.is_empty() || !self.set_color(style.color(), true) {
            return Ok(());
        }
        let size = style.size() / FONT_SIZE_RATIO;
        let width = self.text_width(text, size);
        let ascent = f64::from(self.font.ascent_unscaled()) / self.units_per_em() * size;
        let descent = f64::from(self.font.descent_unscaled()) / self.units_per_em() * size;
        // Offsets along the text's own axes (drawing units, y down), as the SVG anchors it.
        let dx = match style.anchor().h_pos {
            HPos::Left => 0.0,
            HPos::Center => -width / 2.0,
            HPos::Right => -width,
        };
        let dy = match style.anchor().v_pos {
            VPos::Top => ascent,
            VPos::Center => (ascent + descent) / 2.0,
            VPos::Bottom => descent,
        };
        // The baseline start in drawing units, then the rotation about `pos`.
        let (sin, cos) = match style.transform() {
            FontTransform::Rotate90 => (1.0, 0.0),
            FontTransform::Rotate180 => (0.0, -1.0),
            FontTransform::Rotate270 => (-1.0, 0.0),
            _ => (0.0, 1.0),
        };
        let (px, py) = (f64::from(pos.0), f64::from(pos.1));
        let bx = px + dx * cos - dy * sin;
        let by = py + dx * sin + dy * cos;
        let mut hex = String::with_capacity(text.len() * 4);
        for c in text.chars() {
            let g = self.font.glyph_id(c).0;
            self.glyphs.entry(g).or_insert(c);
            let _ = write!(hex, "{g:04X}");
        }
        // y down in drawing units is y up in PDF: the text matrix rotates the other way.
        let _ = writeln!(
            self.ops,
            "BT /F1 {:.3} Tf {cos:.3} {:.3} {:.3} {cos:.3} {:.3} {:.3} Tm <{hex}> Tj ET",
            size * PT,
            -sin,
            sin,
            bx * PT,
            (f64::from(self.size.1) - by) * PT
        );
        Ok(())
    }

    fn estimate_text_size<TStyle: BackendTextStyle>(
        &self,
        text: &str,
        style: &TStyle,
    ) -> Result2<(u32, u32)> {
        let size = style.size() / FONT_SIZE_RATIO;
        let height = (f64::from(self.font.ascent_unscaled() - self.font.descent_unscaled())
            / self.units_per_em()
            * size)
            .ceil();
        let width = self.text_width(text, size).ceil();
        Ok(match style.transform() {
            FontTransform::Rotate90 | FontTransform::Rotate270 => (height as u32, width as u32),
            _ => (width as u32, height as u32),
        })
    }
}

impl Drop for PdfBackend {
    fn drop(&mut self) {
        // plotters presents explicitly through the drawing area; this covers an early drop.
        let _ = self.present();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use plotters::prelude::*;

    /// Every xref entry points at its object, and `startxref` at the table: what a strict
    /// reader checks first (the end-to-end test reads a whole report's PDF with pypdf).
    #[test]
    fn the_cross_reference_table_points_at_every_object() {
        let font = super::super::ensure_font().expect("a TrueType font (fonts-dejavu-core)");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.pdf");
        {
            let area = PdfBackend::new(&path, (400, 300), font)
                .expect("backend")
                .into_drawing_area();
            area.fill(&WHITE).expect("fill");
            area.draw(&Circle::new((50, 50), 10, RED.mix(0.3).filled()))
                .expect("circle");
            area.draw_text(
                "ε = 8/255 ± 1",
                &("sans-serif", 20.0).into_text_style(&area),
                (100, 100),
            )
            .expect("text");
            area.present().expect("written");
        }
        let bytes = std::fs::read(&path).expect("read");
        // The trailer and the table are ASCII; the streams before them are binary.
        let tail = String::from_utf8_lossy(&bytes[bytes.len().saturating_sub(64)..]).into_owned();
        let start: usize = tail
            .rsplit("startxref\n")
            .next()
            .and_then(|t| t.lines().next())
            .and_then(|l| l.parse().ok())
            .expect("startxref");
        let table = String::from_utf8_lossy(&bytes[start..]).into_owned();
        assert!(
            table.starts_with("xref\n0 "),
            "startxref points at the table"
        );
        let entries: Vec<usize> = table
            .lines()
            .skip(3)
            .take_while(|l| l.ends_with(" n "))
            .map(|l| l[..10].parse().expect("offset"))
            .collect();
        assert!(entries.len() >= 10, "{entries:?}");
        for (i, offset) in entries.iter().enumerate() {
            let head = format!("{} 0 obj", i + 1);
            assert!(
                bytes[*offset..].starts_with(head.as_bytes()),
                "object {} is not at {offset}",
                i + 1
            );
        }
        let text = String::from_utf8_lossy(&bytes);
        // The half-transparent fill goes through an ExtGState.
        assert!(text.contains("/ca 0.30"), "opacity");
    }
}
