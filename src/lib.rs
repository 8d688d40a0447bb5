//! TOP relay network facade package.
