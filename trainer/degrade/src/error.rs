//! The one error type of the crate: what failed, on which file, and what to do about it.

use std::path::PathBuf;

/// Everything that can go wrong while loading, degrading or writing images.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An image file could not be opened or decoded.
    #[error("cannot read image {path}: {source}; check that it is a valid PNG/JPEG/TIFF/PPM/WebP file or remove it")]
    ReadImage {
        /// The file.
        path: PathBuf,
        /// What the decoder said.
        source: image::ImageError,
    },

    /// In-memory bytes are not a decodable image.
    #[error("cannot decode image bytes: {0}; pass the bytes of a PNG/JPEG/TIFF/PPM/WebP file")]
    Decode(#[source] image::ImageError),

    /// An image could not be encoded (PNG for output, JPEG for the `jpeg` degradation).
    #[error("cannot encode a {width}x{height} image as {format}: {source}")]
    Encode {
        /// `"PNG"` or `"JPEG"`.
        format: &'static str,
        /// Image width.
        width: usize,
        /// Image height.
        height: usize,
        /// What the encoder said.
        source: image::ImageError,
    },

    /// A file or folder could not be created or written.
    #[error("cannot write {path}: {source}; check that the folder is writable and the disk is not full")]
    Write {
        /// The file or folder.
        path: PathBuf,
        /// The operating-system error.
        source: std::io::Error,
    },

    /// An image folder is missing or cannot be listed.
    #[error("cannot list the image folder {path}: {source}; pass an existing folder of images")]
    ListFolder {
        /// The folder.
        path: PathBuf,
        /// The operating-system error.
        source: std::io::Error,
    },

    /// An image folder holds no image files.
    #[error("the image folder {path} holds no PNG/JPEG/TIFF/PPM/WebP files; put images there or pass another folder")]
    EmptyFolder {
        /// The folder.
        path: PathBuf,
    },

    /// Two clean images would write samples with the same names.
    #[error("{first} and {second} have the same file stem, so their samples would overwrite each other; rename one")]
    DuplicateStem {
        /// The first file.
        first: PathBuf,
        /// The second file.
        second: PathBuf,
    },

    /// A clean image is smaller than the requested crop.
    #[error("image {path} is {width}x{height}, smaller than the {crop}x{crop} crop; use a smaller crop or remove it")]
    ImageTooSmall {
        /// The file.
        path: PathBuf,
        /// Its width.
        width: usize,
        /// Its height.
        height: usize,
        /// The crop side.
        crop: usize,
    },

    /// An in-memory image is smaller than the requested crop.
    #[error("cannot crop {crop}x{crop} out of a {width}x{height} image; use a smaller crop")]
    CropTooLarge {
        /// Image width.
        width: usize,
        /// Image height.
        height: usize,
        /// The crop side.
        crop: usize,
    },

    /// An [`Rgb`](crate::Rgb) whose fields do not describe a valid image.
    #[error("invalid image: {0}; build it with Rgb::new from width*height*3 finite values in [0, 1]")]
    InvalidImage(String),

    /// A class id that is not one of the 19.
    #[error("unknown degradation class '{id}'; use one of: {known}")]
    UnknownClass {
        /// The id asked for.
        id: String,
        /// The valid ids, comma-separated.
        known: String,
    },

    /// A level index past the end of a class's level list.
    #[error("class {class} has {count} levels, so level {level} does not exist; use 0..{count} (see LEVELS.md)")]
    LevelOutOfRange {
        /// The class id.
        class: &'static str,
        /// The level asked for.
        level: usize,
        /// How many levels the class has.
        count: usize,
    },

    /// A level description that matches no level of the class.
    #[error("class {class} has no level '{description}'; copy a description from LEVELS.md")]
    UnknownLevel {
        /// The class id.
        class: &'static str,
        /// The description asked for.
        description: String,
    },

    /// Dataset options that cannot produce a dataset.
    #[error("invalid dataset options: {0}")]
    Options(String),

    /// A manifest file could not be read or parsed.
    #[error("cannot read manifest {path}: {reason}; regenerate it with write_dataset")]
    Manifest {
        /// The file.
        path: PathBuf,
        /// The I/O or JSON error.
        reason: String,
    },
}
